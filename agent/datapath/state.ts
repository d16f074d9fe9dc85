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
  /** entries present in the other half (so a rewrite can delete leftovers past the new sizes). */
  readonly otherHalf: { readonly slots: number; readonly members: number };
}

export interface SlotRef {
  readonly serviceId: number;
  readonly index: number;
}

export interface DatapathState {
  readonly services: ReadonlyMap<string, ServiceState>;
  /** backends found in the maps that no service owns (left by a crash): reclaimed by the next apply. */
  readonly orphanBackendIds: readonly number[];
  /** table entries of no service: reclaimed by the next apply. */
  readonly orphanSlots: readonly SlotRef[];
}

export const EMPTY_DATAPATH_STATE: DatapathState = Object.freeze({
  services: new Map(),
  orphanBackendIds: [],
  orphanSlots: [],
});

export function countBackends(state: DatapathState): number {
  let n = state.orphanBackendIds.length;
  for (const service of state.services.values()) n += service.members.size;
  return n;
}

export function countSlots(state: DatapathState): number {
  let n = state.orphanSlots.length;
  for (const s of state.services.values()) {
    n += s.slots.length + s.activeIds.length + s.otherHalf.slots + s.otherHalf.members;
  }
  return n;
}
