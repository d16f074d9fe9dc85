/**
 * Upgrades socket-LB maps an earlier agent left pinned. A map whose layout changed gets a new pinned
 * name (the version suffix); the objects of this agent create it empty. Before any of their programs
 * replaces an old one, this copies what the old pin holds into the new map, in the new layout, so no
 * connect() ever finds a service missing; then it removes the old pin (old programs keep the map alive
 * until they are replaced). Run it after loading sock_lb.bpf.o and before attaching or adopting links.
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { BpfMap, BpfObject, NativeBpf } from '../../native/types';
import { fieldOffsets, u32Key } from '../abi/codec';
import {
  BackendCodec,
  BackendStateCodec,
  BackendStatsCodec,
  carriesInlineSlots,
  InlineBackendCodec,
  LB_SLOT_GEN_BIT,
  LB_SVC_F_INLINE,
  LB_SVC_F_MEMBERS_ARE_SLOTS,
  LbMaps,
  LbRetiredMaps,
  ServiceCodec,
  ServiceStatsCodec,
  SlotKeyCodec,
} from '../abi/lb';

const SERVICE = fieldOffsets(ServiceCodec, ['inline_slots', 'flags']);
/** A services_v1 record is lb_service up to (not including) inline_slots. */
const SERVICE_V1_SIZE = SERVICE.inline_slots;

export interface MigrationResult {
  /** retired pins that were copied and removed */
  readonly migrated: string[];
  /** service records carried over */
  readonly services: number;
}

/**
 * Copies every retired socket-LB pin under mapsDir into the object's current maps and removes it:
 * - services_v1: each record keeps its fields; an unweighted service of up to LB_INLINE_BACKENDS live
 *   slots also gets them inline, read from the slot and backend maps both layouts share, as the writer
 *   would write them;
 * - backend_state_v1: live state (ejection, active connections) kept, the owning service named, and
 *   the connect and close counts (per CPU in v1) summed into it;
 * - backend_stats_v1, service_stats_v1: the per-CPU counters that stay per CPU, CPU by CPU.
 * Entries of ids no live member or service has are not carried over (they are zero by design).
 */
export function migrateRetiredLbMaps(bpf: NativeBpf, mapsDir: string, sockLb: BpfObject): MigrationResult {
  const migrated: string[] = [];
  let services = 0;
  const retired = (name: string, valueSize: number, copy: (old: BpfMap) => void): void => {
    const path = join(mapsDir, name);
    if (!existsSync(path)) return;
    const old = bpf.openPinnedMap(path);
    try {
      if (old.info().valueSize !== valueSize) {
        throw new Error(`${path}: value size ${old.info().valueSize}, expected ${valueSize}: not migrated`);
      }
      copy(old);
    } finally {
      old.close();
    }
    rmSync(path, { force: true });
    migrated.push(name);
  };
  const backends = sockLb.map(LbMaps.backends);
  const slots = sockLb.map(LbMaps.slots);
  const current = {
    services: sockLb.map(LbMaps.services),
    backendState: sockLb.map(LbMaps.backendState),
    backendStats: sockLb.map(LbMaps.backendStats),
    serviceStats: sockLb.map(LbMaps.serviceStats),
  };

  retired(LbRetiredMaps.servicesV1, SERVICE_V1_SIZE, (old) => {
    const { keys, values } = old.lookupBatch();
    const out = Buffer.alloc(keys.length * ServiceCodec.size);
    keys.forEach((_, i) => {
      const record = out.subarray(i * ServiceCodec.size, (i + 1) * ServiceCodec.size);
      values[i]!.copy(record, 0, 0, SERVICE_V1_SIZE);
      inlineSlots(record, slots, backends);
    });
    if (keys.length > 0) current.services.updateBatch(Buffer.concat(keys), out, keys.length);
    services = keys.length;
  });

  // Live members (id → owning service) and services, as the current maps now hold them.
  const members = new Map<number, number>();
  const rawBackends = backends.lookupBatch();
  rawBackends.keys.forEach((key, i) => {
    members.set(key.readUInt32LE(0), BackendCodec.decode(rawBackends.values[i]!).service_id);
  });
  const serviceIds = current.services.lookupBatch().values.map((v) => ServiceCodec.decode(v).id);

  // v1's per-CPU {connects, connect_failures, ejections, closed}: the per-CPU part moves CPU by CPU;
  // connects and closed are summed into the state below.
  const movedCounts = new Map<number, { connects: bigint; closed: bigint }>();
  retired(LbRetiredMaps.backendStatsV1, 32, (old) => {
    for (const id of members.keys()) {
      const perCpu = old.lookupPerCpu(u32Key(id));
      if (!perCpu) continue;
      let connects = 0n;
      let closed = 0n;
      const values = perCpu.map((v) => {
        connects += v.readBigUInt64LE(0);
        closed += v.readBigUInt64LE(24);
        return BackendStatsCodec.encode({
          connect_failures: v.readBigUInt64LE(8),
          ejections: v.readBigUInt64LE(16),
        });
      });
      current.backendStats.updatePerCpu(u32Key(id), values);
      movedCounts.set(id, { connects, closed });
    }
  });
  retired(LbRetiredMaps.backendStateV1, 32, (old) => {
    for (const [id, serviceId] of members) {
      const v1 = old.lookup(u32Key(id));
      if (!v1) continue;
      const counts = movedCounts.get(id);
      current.backendState.update(
        u32Key(id),
        BackendStateCodec.encode({
          ejected_until_ns: v1.readBigUInt64LE(0),
          active: v1.readBigInt64LE(8),
          consecutive_fails: v1.readUInt32LE(16),
          consecutive_ejects: v1.readUInt32LE(20),
          service_id: serviceId,
          connects: counts?.connects ?? 0n,
          closed: counts?.closed ?? 0n,
        }),
      );
    }
  });
  // v1's per-CPU {connects, connect_failures, no_backend, ejections, rr_cursor}: a service's connects
  // are now its backends'.
  retired(LbRetiredMaps.serviceStatsV1, 40, (old) => {
    for (const id of serviceIds) {
      const perCpu = old.lookupPerCpu(u32Key(id));
      if (!perCpu) continue;
      current.serviceStats.updatePerCpu(
        u32Key(id),
        perCpu.map((v) =>
          ServiceStatsCodec.encode({
            connect_failures: v.readBigUInt64LE(8),
            no_backend: v.readBigUInt64LE(16),
            ejections: v.readBigUInt64LE(24),
            rr_cursor: v.readBigUInt64LE(32),
          }),
        ),
      );
    }
  });
  return { migrated, services };
}

/** Fills inline_slots and LB_SVC_F_INLINE in a record when its live table qualifies. */
function inlineSlots(record: Buffer, slots: BpfMap, backends: BpfMap): void {
  const service = ServiceCodec.decode(record);
  const n = service.slot_count;
  if (!carriesInlineSlots((service.flags & LB_SVC_F_MEMBERS_ARE_SLOTS) !== 0, n)) return;
  const half = service.generation ? LB_SLOT_GEN_BIT : 0;
  const inline: { addr: Buffer; port: number; id: number }[] = [];
  for (let i = 0; i < n; i++) {
    const slot = slots.lookup(SlotKeyCodec.encode({ service_id: service.id, index: (half | i) >>> 0 }));
    const id = slot?.readUInt32LE(0) ?? 0;
    const raw = id ? backends.lookup(u32Key(id)) : undefined;
    if (!raw) return; // a table the old agent left half-written: the slot map path serves it
    const backend = BackendCodec.decode(raw);
    inline.push({ addr: backend.addr, port: backend.port, id });
  }
  inline.forEach((slot, k) => {
    InlineBackendCodec.encodeInto(record, SERVICE.inline_slots + k * InlineBackendCodec.size, slot);
  });
  record[SERVICE.flags] = service.flags | LB_SVC_F_INLINE;
}
