/**
 * What the socket-LB maps hold, as the writer knows it: each service with its id, record, members (with
 * backend ids) and the two halves of its selection table. The diff reads it and returns the next one.
 */
import type { ServiceConfig, ServiceKey } from './desired-state';

export interface MemberState {
  readonly id: number;
  readonly identity: string;
  readonly address: string;
  readonly addr: Buffer;
  readonly port: number;
  readonly weight: number;
  readonly state: number;
  readonly flags: number;
}

export interface ServiceState {
  readonly keyString: string;
  readonly key: ServiceKey;
  readonly id: number;
  readonly config: ServiceConfig;
  /** live half of the selection table: 0 or 1. */
  readonly generation: number;
  /** every member of the service (active and draining), by identity. */
  readonly members: ReadonlyMap<string, MemberState>;
  /** live half: slot → backend id. */
  readonly slots: readonly number[];
  /** live half: member list (active backend ids), for least-connections and the ejection floor. */
  readonly activeIds: readonly number[];
  /** member-list entries written in the live half: 0 when the slots are the member list. */
  readonly memberEntries: number;
  /** entries present in the other half (so a rewrite can delete leftovers past the new sizes). */
  readonly otherHalf: { readonly slots: number; readonly members: number };
}

export interface SlotRef {
  readonly serviceId: number;
  readonly index: number;
}

/**
 * The ids in use, shared by a writer's successive states so a diff needs no O(all ids) copy: a diff only
 * reads it; the writer records each applied plan's allocations and frees (applyIds).
 */
export interface IdBook {
  /** every backend id in the maps (members and orphans). */
  readonly backendIds: Set<number>;
  /** every service id in the maps. */
  readonly serviceIds: Set<number>;
  /** no backend id below this is free. */
  backendHint: number;
  /** no service id below this is free. */
  serviceHint: number;
}

export interface IdChanges {
  readonly addBackends: readonly number[];
  readonly addServices: readonly number[];
  readonly freeBackends: readonly number[];
  readonly freeServices: readonly number[];
}

export function applyIds(book: IdBook, changes: IdChanges, phase: 'allocate' | 'free'): void {
  if (phase === 'allocate') {
    for (const id of changes.addBackends) book.backendIds.add(id);
    for (const id of changes.addServices) book.serviceIds.add(id);
    return;
  }
  for (const id of changes.freeBackends) {
    book.backendIds.delete(id);
    if (id < book.backendHint) book.backendHint = id;
  }
  for (const id of changes.freeServices) {
    book.serviceIds.delete(id);
    if (id < book.serviceHint) book.serviceHint = id;
  }
}

export interface DatapathState {
  readonly services: ReadonlyMap<string, ServiceState>;
  /** backends found in the maps that no service owns (left by a crash): reclaimed by the next apply. */
  readonly orphanBackendIds: readonly number[];
  /** table entries of no service: reclaimed by the next apply. */
  readonly orphanSlots: readonly SlotRef[];
  /** ids in use (shared with the writer's later states: read it only through the latest state). */
  readonly ids: IdBook;
  /** selection-table entries in the maps (both halves, orphans included). */
  readonly slotEntries: number;
}

export const EMPTY_DATAPATH_STATE: DatapathState = Object.freeze({
  services: new Map(),
  orphanBackendIds: [],
  orphanSlots: [],
  ids: { backendIds: new Set<number>(), serviceIds: new Set<number>(), backendHint: 1, serviceHint: 1 },
  slotEntries: 0,
});

/** Entries a service holds in the slot map (both halves). */
export function serviceSlotEntries(s: ServiceState): number {
  return s.slots.length + s.memberEntries + s.otherHalf.slots + s.otherHalf.members;
}

/** Builds the derived fields from services and orphans (restore, tests). */
export function datapathState(
  services: ReadonlyMap<string, ServiceState>,
  orphanBackendIds: readonly number[] = [],
  orphanSlots: readonly SlotRef[] = [],
): DatapathState {
  const backendIds = new Set<number>(orphanBackendIds);
  const serviceIds = new Set<number>();
  let slotEntries = orphanSlots.length;
  for (const s of services.values()) {
    serviceIds.add(s.id);
    for (const m of s.members.values()) backendIds.add(m.id);
    slotEntries += serviceSlotEntries(s);
  }
  return {
    services,
    orphanBackendIds,
    orphanSlots,
    ids: { backendIds, serviceIds, backendHint: 1, serviceHint: 1 },
    slotEntries,
  };
}
