/**
 * The pure diff: current map state + desired state → the map operations that turn one into the other,
 * in an order that keeps every connect() consistent, and the state after them.
 *
 * Order (the writer applies the phases in this order):
 *  1. backends: new members (new ids, zeroed live state) and changed ones;
 *  2. tables: a changed service's new table is written into its *inactive* half (leftovers past the new
 *     sizes deleted there), never into the half connect() reads;
 *  3. services: the record is replaced whole, flipping `generation` to the freshly written half, so a
 *     connect sees the old set or the new one, never a mix; removed services are deleted;
 *  4. reclaim (after a grace period for programs still holding the old record): removed members'
 *     backends, deleted services' tables, orphans; freed ids get their counters zeroed.
 * Capacity checks run before any operation, so a change that does not fit writes nothing.
 */
import { LB_SLOT_GEN_BIT, LB_SLOT_MEMBER_BIT } from '../abi/lb';
import type { DesiredMember, DesiredState, ServiceConfig, ServiceKey } from './desired-state';
import { LbCapacityError, type LbSettings } from './settings';
import type { DatapathState, MemberState, ServiceState, SlotRef } from './state';

export interface BackendWrite {
  readonly id: number;
  readonly serviceId: number;
  readonly member: DesiredMember;
}

export interface SlotWrite extends SlotRef {
  readonly backendId: number;
}

export interface ServiceWrite {
  readonly key: ServiceKey;
  readonly id: number;
  readonly config: ServiceConfig;
  readonly generation: number;
  readonly slotCount: number;
  readonly backendCount: number;
}

export interface DatapathPlan {
  /** phase 1 */
  readonly backendWrites: readonly BackendWrite[];
  /** phase 1: ids new to the maps, whose live state (ejection, active count) starts at zero. */
  readonly newBackendIds: readonly number[];
  /** phase 2 */
  readonly slotDeletes: readonly SlotRef[];
  readonly slotWrites: readonly SlotWrite[];
  /** phase 3 */
  readonly serviceWrites: readonly ServiceWrite[];
  readonly serviceDeletes: readonly ServiceKey[];
  /** phase 4 (after the grace period) */
  readonly reclaimBackendIds: readonly number[];
  readonly reclaimSlots: readonly SlotRef[];
  readonly reclaimServiceIds: readonly number[];
  readonly next: DatapathState;
  readonly summary: {
    readonly servicesAdded: number;
    readonly servicesChanged: number;
    readonly servicesRemoved: number;
    readonly backendsAdded: number;
    readonly backendsRemoved: number;
  };
}

/** Slot-map index of a slot or member in one half. */
export function slotIndex(generation: number, position: number, member = false): number {
  return ((generation ? LB_SLOT_GEN_BIT : 0) | (member ? LB_SLOT_MEMBER_BIT : 0) | position) >>> 0;
}

/** Lowest free ids in [1, max], skipping `used`. */
class IdAllocator {
  private next = 1;
  constructor(
    private readonly used: Set<number>,
    private readonly max: number,
  ) {}
  take(): number | undefined {
    while (this.next <= this.max && this.used.has(this.next)) this.next++;
    if (this.next > this.max) return undefined;
    const id = this.next++;
    this.used.add(id);
    return id;
  }
}

const sameConfig = (a: ServiceConfig, b: ServiceConfig): boolean =>
  a.algorithm === b.algorithm &&
  a.flags === b.flags &&
  a.maxEjectPct === b.maxEjectPct &&
  a.affinityTimeoutS === b.affinityTimeoutS &&
  a.ejectThreshold === b.ejectThreshold &&
  a.ejectBaseMs === b.ejectBaseMs &&
  a.ejectMaxMs === b.ejectMaxMs;

const sameNumbers = (a: readonly number[], b: readonly number[]): boolean =>
  a.length === b.length && a.every((v, i) => v === b[i]);

const sameMember = (m: MemberState, d: DesiredMember): boolean =>
  m.weight === d.weight && m.state === d.state && m.flags === d.flags;

function halfEntries(generation: number, serviceId: number, slots: number, members: number): SlotRef[] {
  const refs: SlotRef[] = [];
  for (let i = 0; i < slots; i++) refs.push({ serviceId, index: slotIndex(generation, i) });
  for (let i = 0; i < members; i++) refs.push({ serviceId, index: slotIndex(generation, i, true) });
  return refs;
}

export function diffDatapath(
  current: DatapathState,
  desired: DesiredState,
  settings: LbSettings,
): DatapathPlan {
  // Capacity first: services, then backends (removed ones are freed only after the new are written),
  // then table entries (peak: both halves of every service plus what is reclaimed last).
  let servicesAfter = 0;
  let newServices = 0;
  let newBackends = 0;
  for (const want of desired.values()) {
    servicesAfter++;
    const have = current.services.get(want.keyString);
    if (!have) newServices++;
    for (const member of want.members) if (!have?.members.has(member.identity)) newBackends++;
  }
  if (servicesAfter > settings.maxServices || current.services.size + newServices > settings.maxServices) {
    throw new LbCapacityError(
      'maxServices',
      settings.maxServices,
      Math.max(servicesAfter, current.services.size + newServices),
      'services',
    );
  }
  let backendsNow = current.orphanBackendIds.length;
  const usedBackendIds = new Set<number>(current.orphanBackendIds);
  const usedServiceIds = new Set<number>();
  for (const s of current.services.values()) {
    usedServiceIds.add(s.id);
    backendsNow += s.members.size;
    for (const m of s.members.values()) usedBackendIds.add(m.id);
  }
  if (backendsNow + newBackends > settings.maxBackends) {
    throw new LbCapacityError(
      'maxBackends',
      settings.maxBackends,
      backendsNow + newBackends,
      'backends, removed ones counted until reclaimed',
    );
  }

  const backendIds = new IdAllocator(usedBackendIds, settings.maxBackends);
  const serviceIds = new IdAllocator(usedServiceIds, settings.maxServices);

  const backendWrites: BackendWrite[] = [];
  const newBackendIds: number[] = [];
  const slotDeletes: SlotRef[] = [];
  const slotWrites: SlotWrite[] = [];
  const serviceWrites: ServiceWrite[] = [];
  const serviceDeletes: ServiceKey[] = [];
  const reclaimBackendIds: number[] = [...current.orphanBackendIds];
  const reclaimSlots: SlotRef[] = [...current.orphanSlots];
  const reclaimServiceIds: number[] = [];
  const nextServices = new Map<string, ServiceState>();
  const summary = {
    servicesAdded: 0,
    servicesChanged: 0,
    servicesRemoved: 0,
    backendsAdded: 0,
    backendsRemoved: 0,
  };
  let peakSlots = current.orphanSlots.length;

  for (const want of desired.values()) {
    const have = current.services.get(want.keyString);
    const serviceId = have ? have.id : serviceIds.take();
    if (serviceId === undefined)
      throw new LbCapacityError('maxServices', settings.maxServices, settings.maxServices + 1, 'no free id');

    const members = new Map<string, MemberState>();
    let membersChanged = false;
    for (const member of want.members) {
      const old = have?.members.get(member.identity);
      const id = old ? old.id : backendIds.take();
      if (id === undefined)
        throw new LbCapacityError(
          'maxBackends',
          settings.maxBackends,
          settings.maxBackends + 1,
          'no free id',
        );
      if (!old) {
        newBackendIds.push(id);
        summary.backendsAdded++;
      }
      if (!old || !sameMember(old, member)) {
        backendWrites.push({ id, serviceId, member });
        membersChanged = true;
      }
      members.set(member.identity, {
        id,
        identity: member.identity,
        address: member.address,
        addr: member.addr,
        port: member.port,
        weight: member.weight,
        state: member.state,
        flags: member.flags,
      });
    }
    if (have) {
      for (const [identity, old] of have.members) {
        if (!members.has(identity)) {
          reclaimBackendIds.push(old.id);
          summary.backendsRemoved++;
          membersChanged = true;
        }
      }
    }

    const activeIds = want.active.map((identity) => members.get(identity)!.id);
    const slots = want.table.map((i) => activeIds[i]!);
    const tableChanged = !have || !sameNumbers(have.slots, slots) || !sameNumbers(have.activeIds, activeIds);
    let generation = have ? have.generation : 0;
    let otherHalf = have ? have.otherHalf : { slots: 0, members: 0 };
    if (tableChanged) {
      const half = have ? 1 - have.generation : 0;
      // Leftovers of the half being rewritten, past the new sizes.
      for (let i = slots.length; i < otherHalf.slots; i++)
        slotDeletes.push({ serviceId, index: slotIndex(half, i) });
      for (let i = activeIds.length; i < otherHalf.members; i++) {
        slotDeletes.push({ serviceId, index: slotIndex(half, i, true) });
      }
      slots.forEach((backendId, i) => {
        slotWrites.push({ serviceId, index: slotIndex(half, i), backendId });
      });
      activeIds.forEach((backendId, i) => {
        slotWrites.push({ serviceId, index: slotIndex(half, i, true), backendId });
      });
      otherHalf = have
        ? { slots: have.slots.length, members: have.activeIds.length }
        : { slots: 0, members: 0 };
      generation = half;
    }
    if (!have) peakSlots += slots.length + activeIds.length;
    else if (tableChanged) {
      peakSlots +=
        Math.max(have.otherHalf.slots, slots.length) +
        Math.max(have.otherHalf.members, activeIds.length) +
        have.slots.length +
        have.activeIds.length;
    } else
      peakSlots += have.slots.length + have.activeIds.length + have.otherHalf.slots + have.otherHalf.members;
    if (tableChanged || !have || !sameConfig(have.config, want.config)) {
      serviceWrites.push({
        key: want.key,
        id: serviceId,
        config: want.config,
        generation,
        slotCount: slots.length,
        backendCount: activeIds.length,
      });
      if (have) summary.servicesChanged++;
      else summary.servicesAdded++;
    } else if (membersChanged) {
      summary.servicesChanged++;
    }
    nextServices.set(want.keyString, {
      keyString: want.keyString,
      key: want.key,
      id: serviceId,
      config: want.config,
      generation,
      members,
      slots,
      activeIds,
      otherHalf,
    });
  }

  for (const [keyString, have] of current.services) {
    if (desired.has(keyString)) continue;
    serviceDeletes.push(have.key);
    for (const m of have.members.values()) reclaimBackendIds.push(m.id);
    summary.backendsRemoved += have.members.size;
    reclaimSlots.push(...halfEntries(have.generation, have.id, have.slots.length, have.activeIds.length));
    reclaimSlots.push(
      ...halfEntries(1 - have.generation, have.id, have.otherHalf.slots, have.otherHalf.members),
    );
    peakSlots += have.slots.length + have.activeIds.length + have.otherHalf.slots + have.otherHalf.members;
    reclaimServiceIds.push(have.id);
    summary.servicesRemoved++;
  }
  if (peakSlots > settings.maxSlots) {
    throw new LbCapacityError(
      'maxSlots',
      settings.maxSlots,
      peakSlots,
      'selection-table entries, both halves',
    );
  }

  return {
    backendWrites,
    newBackendIds,
    slotDeletes,
    slotWrites,
    serviceWrites,
    serviceDeletes,
    reclaimBackendIds,
    reclaimSlots,
    reclaimServiceIds,
    next: { services: nextServices, orphanBackendIds: [], orphanSlots: [] },
    summary,
  };
}
