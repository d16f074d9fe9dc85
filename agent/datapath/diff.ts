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
 *
 * A full diff makes the maps hold exactly `desired`; a partial one (options.partial) changes only the
 * services in `desired` and removes those in options.remove, carrying every other service over untouched
 * (O(changed services), for one-service updates on top of thousands).
 *
 * When a table is the member list itself (one slot per member, in order: every unweighted policy) the
 * member list is not written twice: the record carries LB_SVC_F_MEMBERS_ARE_SLOTS and readers use the
 * slots.
 */
import {
  carriesInlineSlots,
  LB_SLOT_GEN_BIT,
  LB_SLOT_MEMBER_BIT,
  LB_SVC_F_INLINE,
  LB_SVC_F_MEMBERS_ARE_SLOTS,
} from '../abi/lb';
import type { DesiredMember, DesiredState, ServiceConfig, ServiceKey } from './desired-state';
import { LbCapacityError, type LbSettings } from './settings';
import {
  type DatapathState,
  type IdChanges,
  type MemberState,
  type ServiceState,
  type SlotRef,
  serviceSlotEntries,
} from './state';

export interface BackendWrite {
  readonly id: number;
  readonly serviceId: number;
  readonly member: DesiredMember;
  /** the id is new to the maps (its live state is written too, naming the service) */
  readonly fresh: boolean;
}

/**
 * One service's selection table written into one half, as one plan entry (a cold sync writes tens of
 * thousands of slots: one object per service, not per slot): slot i holds slots[i], member i members[i].
 */
export interface TableWrite {
  readonly serviceId: number;
  /** the half written: 0 or 1 */
  readonly generation: number;
  /** backend id per slot */
  readonly slots: readonly number[];
  /** the member list (backend ids); empty when the slots are the member list */
  readonly members: readonly number[];
}

/** A slot carried inside the service record: the backend and where it is. */
export interface InlineSlot {
  readonly id: number;
  readonly addr: Buffer;
  readonly port: number;
}

const NO_INLINE: readonly InlineSlot[] = [];

export interface ServiceWrite {
  readonly key: ServiceKey;
  readonly id: number;
  readonly config: ServiceConfig;
  /** config.flags plus the layout flags LB_SVC_F_MEMBERS_ARE_SLOTS and LB_SVC_F_INLINE. */
  readonly flags: number;
  readonly generation: number;
  readonly slotCount: number;
  readonly backendCount: number;
  /** the live slots, when the record carries them (LB_SVC_F_INLINE); else empty */
  readonly inline: readonly InlineSlot[];
}

export interface DatapathPlan {
  /** phase 1 */
  readonly backendWrites: readonly BackendWrite[];
  /** phase 1: ids new to the maps, whose live state (ejection, active count) starts at zero. */
  readonly newBackendIds: readonly number[];
  /** phase 2 */
  readonly slotDeletes: readonly SlotRef[];
  readonly tableWrites: readonly TableWrite[];
  /** phase 3 */
  readonly serviceWrites: readonly ServiceWrite[];
  readonly serviceDeletes: readonly ServiceKey[];
  /** phase 4 (after the grace period) */
  readonly reclaimBackendIds: readonly number[];
  readonly reclaimSlots: readonly SlotRef[];
  readonly reclaimServiceIds: readonly number[];
  /** the state after phase 4 */
  readonly next: DatapathState;
  /** the state between phase 3 and the end of phase 4: what is being reclaimed counts as orphans */
  readonly pending: DatapathState;
  /** ids this plan allocates (recorded when phase 1 starts) and frees (when phase 4 ends) */
  readonly ids: IdChanges;
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

/** Lowest free ids in [1, max] from `start`, skipping `used` and what this plan took; reads only. */
class IdAllocator {
  readonly taken: number[] = [];
  private next: number;
  constructor(
    private readonly used: ReadonlySet<number>,
    private readonly max: number,
    start: number,
  ) {
    this.next = Math.max(1, start);
  }
  take(): number | undefined {
    // `next` only grows, so ids this plan took are behind it already
    while (this.next <= this.max && this.used.has(this.next)) this.next++;
    if (this.next > this.max) return undefined;
    const id = this.next++;
    this.taken.push(id);
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

const NO_HALF = Object.freeze({ slots: 0, members: 0 });

function sameNumbers(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const sameMember = (m: MemberState, d: DesiredMember): boolean =>
  m.weight === d.weight && m.state === d.state && m.flags === d.flags;

function halfEntries(generation: number, serviceId: number, slots: number, members: number): SlotRef[] {
  const refs: SlotRef[] = [];
  for (let i = 0; i < slots; i++) refs.push({ serviceId, index: slotIndex(generation, i) });
  for (let i = 0; i < members; i++) refs.push({ serviceId, index: slotIndex(generation, i, true) });
  return refs;
}

export interface DiffOptions {
  /** change only the services in `desired` (and remove those in `remove`), keep all others */
  readonly partial?: boolean;
  /** partial diffs: service key strings to remove */
  readonly remove?: readonly string[];
}

export function diffDatapath(
  current: DatapathState,
  desired: DesiredState,
  settings: LbSettings,
  options: DiffOptions = {},
): DatapathPlan {
  const partial = options.partial === true;
  const removeKeys = new Set<string>();
  if (partial) {
    for (const key of options.remove ?? [])
      if (current.services.has(key) && !desired.has(key)) removeKeys.add(key);
  } else {
    for (const key of current.services.keys()) if (!desired.has(key)) removeKeys.add(key);
  }

  // Capacity first: services, then backends (removed ones are freed only after the new are written),
  // then table entries (peak: every entry now, plus what the rewritten halves grow by).
  let newServices = 0;
  let newBackends = 0;
  for (const want of desired.values()) {
    const have = current.services.get(want.keyString);
    if (!have) newServices++;
    for (const member of want.members) if (!have?.members.has(member.identity)) newBackends++;
  }
  if (current.services.size + newServices > settings.maxServices) {
    throw new LbCapacityError(
      'maxServices',
      settings.maxServices,
      current.services.size + newServices,
      'services',
    );
  }
  const backendsNow = current.ids.backendIds.size;
  if (backendsNow + newBackends > settings.maxBackends) {
    throw new LbCapacityError(
      'maxBackends',
      settings.maxBackends,
      backendsNow + newBackends,
      'backends, removed ones counted until reclaimed',
    );
  }
  const backendIds = new IdAllocator(current.ids.backendIds, settings.maxBackends, current.ids.backendHint);
  const serviceIds = new IdAllocator(current.ids.serviceIds, settings.maxServices, current.ids.serviceHint);

  const backendWrites: BackendWrite[] = [];
  const newBackendIds: number[] = [];
  const slotDeletes: SlotRef[] = [];
  const tableWrites: TableWrite[] = [];
  const serviceWrites: ServiceWrite[] = [];
  const serviceDeletes: ServiceKey[] = [];
  const reclaimBackendIds: number[] = [...current.orphanBackendIds];
  const reclaimSlots: SlotRef[] = [...current.orphanSlots];
  const reclaimServiceIds: number[] = [];
  const nextServices = partial
    ? new Map<string, ServiceState>(current.services)
    : new Map<string, ServiceState>();
  for (const key of removeKeys) nextServices.delete(key);
  const summary = {
    servicesAdded: 0,
    servicesChanged: 0,
    servicesRemoved: 0,
    backendsAdded: 0,
    backendsRemoved: 0,
  };
  let peakSlots = current.slotEntries;
  let slotEntriesAfter = current.slotEntries - current.orphanSlots.length;

  for (const want of desired.values()) {
    const have = current.services.get(want.keyString);
    const serviceId = have ? have.id : serviceIds.take();
    if (serviceId === undefined) {
      throw new LbCapacityError('maxServices', settings.maxServices, settings.maxServices + 1, 'no free id');
    }

    const members = new Map<string, MemberState>();
    let membersChanged = false;
    for (const member of want.members) {
      const old = have?.members.get(member.identity);
      const id = old ? old.id : backendIds.take();
      if (id === undefined) {
        throw new LbCapacityError(
          'maxBackends',
          settings.maxBackends,
          settings.maxBackends + 1,
          'no free id',
        );
      }
      if (!old) {
        newBackendIds.push(id);
        summary.backendsAdded++;
      }
      if (!old || !sameMember(old, member)) {
        backendWrites.push({ id, serviceId, member, fresh: !old });
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

    const activeIds: number[] = new Array(want.active.length);
    for (let i = 0; i < activeIds.length; i++) activeIds[i] = members.get(want.active[i]!)!.id;
    const table = want.table;
    // The usual unweighted table is the identity (slot i → member i): then the slots are the member list.
    let identityTable = table.length === activeIds.length;
    for (let i = 0; identityTable && i < table.length; i++) identityTable = table[i] === i;
    let slots: number[];
    if (identityTable) slots = activeIds;
    else {
      slots = new Array(table.length);
      for (let i = 0; i < table.length; i++) slots[i] = activeIds[table[i]!]!;
    }
    const membersAreSlots = sameNumbers(slots, activeIds);
    const tableChanged = !have || !sameNumbers(have.slots, slots) || !sameNumbers(have.activeIds, activeIds);
    let generation = have ? have.generation : 0;
    let otherHalf = have ? have.otherHalf : NO_HALF;
    let memberEntries = have ? have.memberEntries : 0;
    if (tableChanged) {
      const half = have ? 1 - have.generation : 0;
      const newMemberEntries = membersAreSlots ? 0 : activeIds.length;
      // Leftovers of the half being rewritten, past the new sizes.
      for (let i = slots.length; i < otherHalf.slots; i++)
        slotDeletes.push({ serviceId, index: slotIndex(half, i) });
      for (let i = newMemberEntries; i < otherHalf.members; i++) {
        slotDeletes.push({ serviceId, index: slotIndex(half, i, true) });
      }
      tableWrites.push({ serviceId, generation: half, slots, members: membersAreSlots ? [] : activeIds });
      peakSlots +=
        Math.max(0, slots.length - otherHalf.slots) + Math.max(0, newMemberEntries - otherHalf.members);
      slotEntriesAfter += slots.length + newMemberEntries - otherHalf.slots - otherHalf.members;
      otherHalf = have ? { slots: have.slots.length, members: have.memberEntries } : NO_HALF;
      generation = half;
      memberEntries = newMemberEntries;
    }
    // A small unweighted table also rides in the record: connect() then reads nothing else to choose.
    const inline: readonly InlineSlot[] = carriesInlineSlots(membersAreSlots, slots.length)
      ? want.active.map((identity) => members.get(identity)!)
      : NO_INLINE;
    const flags =
      want.config.flags |
      (membersAreSlots ? LB_SVC_F_MEMBERS_ARE_SLOTS : 0) |
      (inline.length > 0 ? LB_SVC_F_INLINE : 0);
    if (tableChanged || !have || !sameConfig(have.config, want.config)) {
      serviceWrites.push({
        key: want.key,
        id: serviceId,
        config: want.config,
        flags,
        generation,
        slotCount: slots.length,
        backendCount: activeIds.length,
        inline,
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
      memberEntries,
      otherHalf,
    });
  }

  for (const keyString of removeKeys) {
    const have = current.services.get(keyString)!;
    serviceDeletes.push(have.key);
    for (const m of have.members.values()) reclaimBackendIds.push(m.id);
    summary.backendsRemoved += have.members.size;
    reclaimSlots.push(...halfEntries(have.generation, have.id, have.slots.length, have.memberEntries));
    reclaimSlots.push(
      ...halfEntries(1 - have.generation, have.id, have.otherHalf.slots, have.otherHalf.members),
    );
    reclaimServiceIds.push(have.id);
    slotEntriesAfter -= serviceSlotEntries(have);
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
    tableWrites,
    serviceWrites,
    serviceDeletes,
    reclaimBackendIds,
    reclaimSlots,
    reclaimServiceIds,
    next: {
      services: nextServices,
      orphanBackendIds: [],
      orphanSlots: [],
      ids: current.ids,
      slotEntries: slotEntriesAfter,
    },
    pending: {
      services: nextServices,
      orphanBackendIds: reclaimBackendIds,
      orphanSlots: reclaimSlots,
      ids: current.ids,
      slotEntries: slotEntriesAfter + reclaimSlots.length,
    },
    ids: {
      addBackends: backendIds.taken,
      addServices: serviceIds.taken,
      freeBackends: reclaimBackendIds,
      freeServices: reclaimServiceIds,
    },
    summary,
  };
}
