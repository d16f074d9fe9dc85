/**
 * The datapath writer: applies a DatapathPlan to a map set in the plan's phase order, with batched map
 * operations, and restores its state (ids, generations, tables) from what the maps hold, so a restarted
 * agent adopts pinned maps without disturbing traffic. One implementation over the LbMapSet interface
 * serves the BPF maps (writer-bpf.ts) and the in-memory maps of unit tests (writer-memory.ts).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { fieldOffsets, u32Key } from '../abi/codec';
import { bytes16ToIp } from '../abi/ip';
import {
  BackendCodec,
  BackendStateCodec,
  BackendStatsCodec,
  InlineBackendCodec,
  LB_SLOT_GEN_BIT,
  LB_SLOT_INDEX_MASK,
  LB_SLOT_MEMBER_BIT,
  LB_SVC_F_INLINE,
  LB_SVC_F_MEMBERS_ARE_SLOTS,
  ServiceCodec,
  ServiceKeyCodec,
  ServiceStatsCodec,
  SlotKeyCodec,
} from '../abi/lb';
import { type ServiceKey, serviceKeyString } from './desired-state';
import { type DatapathPlan, slotIndex } from './diff';
import type { KvMap, LbMapSet } from './lb-maps';
import {
  applyIds,
  type DatapathState,
  datapathState,
  type MemberState,
  type ServiceState,
  type SlotRef,
} from './state';

export interface ApplyResult {
  /** ms from the start until every service record was written (the change is live). */
  readonly effectiveMs: number;
  /** ms for the whole apply, reclaim (with its grace period) included. */
  readonly totalMs: number;
  readonly summary: DatapathPlan['summary'];
}

export interface DatapathWriter {
  /** What the maps hold now (restored at start-up, advanced by each apply). */
  readonly state: DatapathState;
  /** Applies a plan computed against `state`. Calls are serialised. */
  apply(plan: DatapathPlan): Promise<ApplyResult>;
}

const BACKEND = fieldOffsets(BackendCodec, ['addr', 'port', 'weight', 'state', 'flags', 'service_id']);
const SERVICE_KEY = fieldOffsets(ServiceKeyCodec, ['addr', 'port', 'proto']);
const SERVICE = fieldOffsets(ServiceCodec, [
  'id',
  'algorithm',
  'flags',
  'generation',
  'max_eject_pct',
  'slot_count',
  'backend_count',
  'affinity_timeout_s',
  'eject_threshold',
  'eject_base_ms',
  'eject_max_ms',
  'inline_slots',
]);
const INLINE = fieldOffsets(InlineBackendCodec, ['addr', 'port', 'id']);
const STATE_SERVICE_ID = fieldOffsets(BackendStateCodec, ['service_id']).service_id;
if (STATE_SERVICE_ID % 4 || BackendStateCodec.size % 4) {
  throw new Error('lb_backend_state layout is no longer 4-byte aligned: update the writer');
}

const SLOT_KEY = fieldOffsets(SlotKeyCodec, ['service_id', 'index']);
// The 32-bit views below need these fields and records 4-byte aligned.
if (BACKEND.service_id % 4 || BackendCodec.size % 4 || SLOT_KEY.index % 4 || SlotKeyCodec.size % 4) {
  throw new Error('lb_backend / lb_slot_key layout is no longer 4-byte aligned: update the writer');
}
/** The slot key's fields as 32-bit word indexes (both are u32). */
const SLOT_KEY_WORD = { service_id: SLOT_KEY.service_id >> 2, index: SLOT_KEY.index >> 2 };

/**
 * n fixed-size records back to back in one zeroed Buffer (pad fields stay 0): the packed form the
 * batch calls take, written in place with no per-record Buffer.
 */
function pack(n: number, size: number, fill: (buf: Buffer, at: number, i: number) => void): Buffer {
  const buf = Buffer.alloc(n * size);
  for (let i = 0; i < n; i++) fill(buf, i * size, i);
  return buf;
}

/**
 * A zeroed Buffer and a 32-bit view of it. Map keys and values are in host byte order (the kernel
 * reads them natively), which is what a typed-array view writes: no per-field bounds checks on the
 * hot path of a 10 000-service sync.
 */
function words(bytes: number): { buf: Buffer; u32: Uint32Array } {
  const u32 = new Uint32Array(Math.ceil(bytes / 4));
  return { buf: Buffer.from(u32.buffer, 0, bytes), u32 };
}

function packU32(values: readonly number[]): Buffer {
  const { buf, u32 } = words(values.length * 4);
  for (let i = 0; i < values.length; i++) u32[i] = values[i]!;
  return buf;
}

const packSlotKeys = (refs: readonly SlotRef[]): Buffer =>
  pack(refs.length, SlotKeyCodec.size, (buf, at, i) => {
    buf.writeUInt32LE(refs[i]!.serviceId, at + SLOT_KEY.service_id);
    buf.writeUInt32LE(refs[i]!.index, at + SLOT_KEY.index);
  });

const packServiceKeys = (keys: readonly ServiceKey[]): Buffer =>
  pack(keys.length, ServiceKeyCodec.size, (buf, at, i) => {
    const key = keys[i]!;
    key.addr.copy(buf, at + SERVICE_KEY.addr, 0, 16);
    buf.writeUInt16BE(key.port, at + SERVICE_KEY.port);
    buf[at + SERVICE_KEY.proto] = key.proto;
  });

/** Deletes `count` packed keys, tolerating ones already gone (deletes are idempotent). */
export function deleteAll(map: KvMap, keys: Buffer, count: number): void {
  if (count === 0) return;
  try {
    map.deleteBatch(keys, count);
  } catch {
    // Finish one by one whatever stopped the batch.
    const size = keys.length / count;
    for (let i = 0; i < count; i++) map.delete(keys.subarray(i * size, (i + 1) * size));
  }
}

function updateAll(map: KvMap, keys: Buffer, values: Buffer, count: number): void {
  if (count > 0) map.updateBatch(keys, values, count);
}

/** Reads the socket-LB maps back into a DatapathState. */
export function restoreState(maps: LbMapSet): DatapathState {
  const backendsById = new Map<number, ReturnType<typeof BackendCodec.decode>>();
  const rawBackends = maps.backends.lookupBatch();
  rawBackends.keys.forEach((key, i) => {
    backendsById.set(key.readUInt32LE(0), BackendCodec.decode(rawBackends.values[i]!));
  });
  const slotsByService = new Map<number, Map<number, number>>();
  const rawSlots = maps.slots.lookupBatch();
  rawSlots.keys.forEach((key, i) => {
    const { service_id, index } = SlotKeyCodec.decode(key);
    let table = slotsByService.get(service_id);
    if (!table) {
      table = new Map();
      slotsByService.set(service_id, table);
    }
    table.set(index, rawSlots.values[i]!.readUInt32LE(0));
  });

  const services = new Map<string, ServiceState>();
  const ownedBackends = new Set<number>();
  const liveServiceIds = new Set<number>();
  const orphanSlots: SlotRef[] = [];
  const rawServices = maps.services.lookupBatch();
  rawServices.keys.forEach((rawKey, i) => {
    const key = ServiceKeyCodec.decode(rawKey);
    const record = ServiceCodec.decode(rawServices.values[i]!);
    const serviceKey: ServiceKey = { addr: key.addr, port: key.port, proto: key.proto };
    const keyString = serviceKeyString(bytes16ToIp(key.addr), key.port, key.proto);
    liveServiceIds.add(record.id);
    const table = slotsByService.get(record.id) ?? new Map<number, number>();
    const half = record.generation ? LB_SLOT_GEN_BIT : 0;
    const slots: number[] = [];
    const activeIds: number[] = [];
    const membersAreSlots = (record.flags & LB_SVC_F_MEMBERS_ARE_SLOTS) !== 0;
    const memberEntries = membersAreSlots ? 0 : record.backend_count;
    for (let s = 0; s < record.slot_count; s++) slots.push(table.get((half | s) >>> 0) ?? 0);
    for (let m = 0; m < record.backend_count; m++) {
      activeIds.push(table.get((half | (membersAreSlots ? 0 : LB_SLOT_MEMBER_BIT) | m) >>> 0) ?? 0);
    }
    // The other half's extent, and garbage past the live half's counts (a crash mid-write).
    let otherSlots = 0;
    let otherMembers = 0;
    for (const index of table.keys()) {
      const position = index & LB_SLOT_INDEX_MASK;
      const member = (index & LB_SLOT_MEMBER_BIT) !== 0;
      const inLive = ((index & LB_SLOT_GEN_BIT) !== 0) === (record.generation !== 0);
      if (inLive) {
        if (position >= (member ? memberEntries : record.slot_count)) {
          orphanSlots.push({ serviceId: record.id, index });
        }
      } else if (member) otherMembers = Math.max(otherMembers, position + 1);
      else otherSlots = Math.max(otherSlots, position + 1);
    }
    const members = new Map<string, MemberState>();
    for (const [id, backend] of backendsById) {
      if (backend.service_id !== record.id) continue;
      const address = bytes16ToIp(backend.addr);
      const identity = `${address}|${backend.port}`;
      ownedBackends.add(id);
      members.set(identity, {
        id,
        identity,
        address,
        addr: backend.addr,
        port: backend.port,
        weight: backend.weight,
        state: backend.state,
        flags: backend.flags,
      });
    }
    services.set(keyString, {
      keyString,
      key: serviceKey,
      id: record.id,
      config: {
        algorithm: record.algorithm,
        flags: record.flags & ~(LB_SVC_F_MEMBERS_ARE_SLOTS | LB_SVC_F_INLINE),
        maxEjectPct: record.max_eject_pct,
        affinityTimeoutS: record.affinity_timeout_s,
        ejectThreshold: record.eject_threshold,
        ejectBaseMs: record.eject_base_ms,
        ejectMaxMs: record.eject_max_ms,
      },
      generation: record.generation ? 1 : 0,
      members,
      slots,
      activeIds,
      memberEntries,
      otherHalf: { slots: otherSlots, members: otherMembers },
    });
  });
  for (const [serviceId, table] of slotsByService) {
    if (liveServiceIds.has(serviceId)) continue;
    for (const index of table.keys()) orphanSlots.push({ serviceId, index });
  }
  const orphanBackendIds = [...backendsById.keys()].filter((id) => !ownedBackends.has(id));
  return datapathState(services, orphanBackendIds, orphanSlots);
}

export interface MapDatapathWriterOptions {
  /** ms between making a change live and deleting what it removed (programs still holding old records). */
  reclaimGraceMs: number;
}

export class MapDatapathWriter implements DatapathWriter {
  private current: DatapathState;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly maps: LbMapSet,
    private readonly options: MapDatapathWriterOptions,
  ) {
    this.current = restoreState(maps);
  }

  get state(): DatapathState {
    return this.current;
  }

  apply(plan: DatapathPlan): Promise<ApplyResult> {
    const run = this.queue.then(() => this.applyNow(plan));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async applyNow(plan: DatapathPlan): Promise<ApplyResult> {
    const started = performance.now();
    const { maps } = this;
    applyIds(this.current.ids, plan.ids, 'allocate');

    // 1. backends. A new id's live state and counters are zero (zeroed when last freed); its state
    // names its service first, so sockops counts the member's connections from its first connect.
    const backends = plan.backendWrites;
    let fresh = 0;
    for (const w of backends) if (w.fresh) fresh++;
    const stateIds = words(fresh * 4);
    const states = words(fresh * BackendStateCodec.size);
    for (let i = 0, k = 0; i < backends.length; i++) {
      const w = backends[i]!;
      if (!w.fresh) continue;
      stateIds.u32[k] = w.id;
      states.u32[(k * BackendStateCodec.size + STATE_SERVICE_ID) >> 2] = w.serviceId;
      k++;
    }
    updateAll(maps.backendState, stateIds.buf, states.buf, fresh);
    const backendIds = words(backends.length * 4);
    const backendValues = words(backends.length * BackendCodec.size);
    for (let i = 0, at = 0; i < backends.length; i++, at += BackendCodec.size) {
      const w = backends[i]!;
      const m = w.member;
      const buf = backendValues.buf;
      backendIds.u32[i] = w.id;
      buf.set(m.addr, at + BACKEND.addr);
      buf.writeUInt16BE(m.port, at + BACKEND.port);
      buf.writeUInt16LE(m.weight, at + BACKEND.weight);
      buf[at + BACKEND.state] = m.state;
      buf[at + BACKEND.flags] = m.flags;
      backendValues.u32[(at + BACKEND.service_id) >> 2] = w.serviceId;
    }
    updateAll(maps.backends, backendIds.buf, backendValues.buf, backends.length);
    // 2. tables, into the inactive halves
    deleteAll(maps.slots, packSlotKeys(plan.slotDeletes), plan.slotDeletes.length);
    const tables = plan.tableWrites;
    let entries = 0;
    for (const t of tables) entries += t.slots.length + t.members.length;
    const slotKeys = words(entries * SlotKeyCodec.size);
    const slotValues = words(entries * 4);
    let at = 0;
    const put = (serviceId: number, index: number, backendId: number) => {
      slotKeys.u32[((at * SlotKeyCodec.size) >> 2) + SLOT_KEY_WORD.service_id] = serviceId;
      slotKeys.u32[((at * SlotKeyCodec.size) >> 2) + SLOT_KEY_WORD.index] = index;
      slotValues.u32[at] = backendId;
      at++;
    };
    for (const t of tables) {
      for (let i = 0; i < t.slots.length; i++) put(t.serviceId, slotIndex(t.generation, i), t.slots[i]!);
      for (let i = 0; i < t.members.length; i++) {
        put(t.serviceId, slotIndex(t.generation, i, true), t.members[i]!);
      }
    }
    updateAll(maps.slots, slotKeys.buf, slotValues.buf, entries);
    // 3. services: whole records, flipping to the new halves
    const services = plan.serviceWrites;
    updateAll(
      maps.services,
      packServiceKeys(services.map((w) => w.key)),
      pack(services.length, ServiceCodec.size, (buf, at, i) => {
        const w = services[i]!;
        const c = w.config;
        buf.writeUInt32LE(w.id, at + SERVICE.id);
        buf[at + SERVICE.algorithm] = c.algorithm;
        buf[at + SERVICE.flags] = w.flags;
        buf[at + SERVICE.generation] = w.generation;
        buf[at + SERVICE.max_eject_pct] = c.maxEjectPct;
        buf.writeUInt16LE(w.slotCount, at + SERVICE.slot_count);
        buf.writeUInt16LE(w.backendCount, at + SERVICE.backend_count);
        buf.writeUInt32LE(c.affinityTimeoutS, at + SERVICE.affinity_timeout_s);
        buf.writeUInt16LE(c.ejectThreshold, at + SERVICE.eject_threshold);
        buf.writeUInt32LE(c.ejectBaseMs, at + SERVICE.eject_base_ms);
        buf.writeUInt32LE(c.ejectMaxMs, at + SERVICE.eject_max_ms);
        for (let k = 0; k < w.inline.length; k++) {
          const slot = w.inline[k]!;
          const base = at + SERVICE.inline_slots + k * InlineBackendCodec.size;
          buf.set(slot.addr, base + INLINE.addr);
          buf.writeUInt16BE(slot.port, base + INLINE.port);
          buf.writeUInt32LE(slot.id, base + INLINE.id);
        }
      }),
      services.length,
    );
    deleteAll(maps.services, packServiceKeys(plan.serviceDeletes), plan.serviceDeletes.length);
    const effectiveMs = performance.now() - started;

    // 4. reclaim, once programs that read the old records are done
    const reclaiming =
      plan.reclaimBackendIds.length > 0 || plan.reclaimSlots.length > 0 || plan.reclaimServiceIds.length > 0;
    if (reclaiming) {
      // Until reclaimed, the removed entries are orphans: a failure (or crash) leaves them for the next run.
      this.current = plan.pending;
      if (this.options.reclaimGraceMs > 0) await sleep(this.options.reclaimGraceMs);
      // Zero the live state before the entry goes: a crash in between leaves an orphan, reclaimed again.
      const reclaimed = plan.reclaimBackendIds;
      const reclaimedKeys = packU32(reclaimed);
      updateAll(
        maps.backendState,
        reclaimedKeys,
        Buffer.alloc(reclaimed.length * BackendStateCodec.size),
        reclaimed.length,
      );
      deleteAll(maps.backends, reclaimedKeys, reclaimed.length);
      deleteAll(maps.slots, packSlotKeys(plan.reclaimSlots), plan.reclaimSlots.length);
      const zeroBackendStats = Array.from({ length: maps.cpus }, () => Buffer.alloc(BackendStatsCodec.size));
      for (const id of plan.reclaimBackendIds) maps.backendStats.updatePerCpu(u32Key(id), zeroBackendStats);
      const zeroServiceStats = Array.from({ length: maps.cpus }, () => Buffer.alloc(ServiceStatsCodec.size));
      for (const id of plan.reclaimServiceIds) maps.serviceStats.updatePerCpu(u32Key(id), zeroServiceStats);
    }
    applyIds(this.current.ids, plan.ids, 'free');
    this.current = plan.next;
    return { effectiveMs, totalMs: performance.now() - started, summary: plan.summary };
  }
}
