/**
 * Decodes the data plane from the pins under a bpffs directory (agent/pins.ts layout) with the addon's
 * openPinnedMap and the agent/abi codecs. Read-only, and independent of the agent process: it shows what
 * the kernel does even while the agent is stopped or restarting.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { BpfMap, NativeBpf } from '../../native/types';
import { u32Key } from '../abi/codec';
import { bytes16ToIp } from '../abi/ip';
import {
  BackendCodec,
  BackendStateCodec,
  BackendStatsCodec,
  isLiveMemberEntry,
  LB_BACKEND_ACTIVE,
  LB_BACKEND_F_LOCAL,
  LB_SVC_F_AFFINITY,
  LbMaps,
  ServiceCodec,
  ServiceKeyCodec,
  ServiceStatsCodec,
  SlotKeyCodec,
} from '../abi/lb';
import { linksOwner, pinLayout } from '../pins';
import type { BackendStateName, BackendView, DataplaneView, LinkView, MapView, ServiceView } from './view';

const ALGORITHMS = ['random', 'weighted', 'round-robin', 'least-connections'];
const PROTOCOLS: Record<number, string> = { 6: 'TCP', 17: 'UDP' };

export class CtlError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'CtlError';
  }
}

/** The directory holding map pins: <bpffs>/maps, or <bpffs> itself for pins made without the agent layout. */
export function mapsDirOf(bpffs: string): string {
  const layoutDir = pinLayout(bpffs).mapsDir;
  return existsSync(join(layoutDir, LbMaps.services)) ? layoutDir : bpffs;
}

function sumPerCpu(
  values: Buffer[] | undefined,
  decode: (buf: Buffer) => Record<string, bigint>,
): Record<string, bigint> {
  const total: Record<string, bigint> = {};
  for (const value of values ?? []) {
    for (const [key, n] of Object.entries(decode(value))) {
      if (typeof n === 'bigint') total[key] = (total[key] ?? 0n) + n;
    }
  }
  return total;
}

function stateName(state: number): BackendStateName {
  if (state === 1) return 'active';
  if (state === 2) return 'draining';
  return 'unknown';
}

function listLinks(bpffs: string): LinkView[] {
  const layout = pinLayout(bpffs);
  const links: LinkView[] = [];
  const list = (path: string) => (existsSync(path) && statSync(path).isDirectory() ? readdirSync(path) : []);
  for (const cg of list(layout.linksDir)) {
    const owner = linksOwner(cg);
    for (const object of list(join(layout.linksDir, cg))) {
      for (const program of list(join(layout.linksDir, cg, object))) {
        links.push({
          attachedTo: `${owner.kind} ${owner.name}`,
          object,
          program,
          pin: join(layout.linksDir, cg, object, program),
        });
      }
    }
  }
  return links;
}

function mapView(map: BpfMap, pin: string): MapView {
  const info = map.info();
  // Arrays are preallocated: every slot exists. Socket storage has no enumerable keys.
  let entries: number | null;
  if (info.type.includes('array') || info.type === 'sk_storage') entries = null;
  else entries = map.keys().length;
  return {
    // The pin's name: the kernel keeps only 15 characters of a map's own name.
    name: basename(pin),
    pin,
    type: info.type,
    keySize: info.keySize,
    valueSize: info.valueSize,
    maxEntries: info.maxEntries,
    entries,
  };
}

export interface ReadOptions {
  /** Read the selection tables to tell which backends are in rotation (default true; the agent's poll skips it). */
  readonly membership?: boolean;
  /** Monotonic now in ns (bpf_ktime_get_ns clock); injected by tests. */
  readonly nowNs?: bigint;
}

/** Reads services, backends, counters, maps and links from the pins under `bpffs`. */
export function readDataplane(bpf: NativeBpf, bpffs: string, options: ReadOptions = {}): DataplaneView {
  if (!existsSync(bpffs))
    throw new CtlError('ERR_NO_BPFFS', `--bpffs: ${bpffs}: no such directory (is the agent installed?)`);
  const mapsDir = mapsDirOf(bpffs);
  const links = listLinks(bpffs);
  const opened = new Map<string, BpfMap>();
  const open = (name: string): BpfMap | undefined => {
    const path = join(mapsDir, name);
    if (!existsSync(path)) return undefined;
    const map = bpf.openPinnedMap(path);
    opened.set(name, map);
    return map;
  };
  try {
    const services = open(LbMaps.services);
    const backends = open(LbMaps.backends);
    const slots = options.membership === false ? undefined : open(LbMaps.slots);
    const states = open(LbMaps.backendState);
    const backendStats = open(LbMaps.backendStats);
    const serviceStats = open(LbMaps.serviceStats);
    const nowNs = options.nowNs ?? process.hrtime.bigint();

    // Backends grouped by service id.
    const byService = new Map<number, BackendView[]>();
    const backendRecords = backends ? backends.lookupBatch() : { keys: [], values: [] };
    const serviceList = services ? services.lookupBatch() : { keys: [], values: [] };
    const memberSets = new Map<number, Set<number>>();
    const serviceRecords = new Map<number, { generation: number; flags: number }>();
    for (const value of serviceList.values) {
      const s = ServiceCodec.decode(value);
      serviceRecords.set(s.id, s);
    }
    if (slots && options.membership !== false) {
      const { keys, values } = slots.lookupBatch();
      keys.forEach((key, i) => {
        const k = SlotKeyCodec.decode(key);
        const service = serviceRecords.get(k.service_id);
        if (!service || !isLiveMemberEntry(service, k.index)) return;
        const value = values[i];
        if (!value) return;
        const set = memberSets.get(k.service_id) ?? new Set<number>();
        memberSets.set(k.service_id, set);
        set.add(value.readUInt32LE(0));
      });
    }
    backendRecords.keys.forEach((key, i) => {
      const id = key.readUInt32LE(0);
      const value = backendRecords.values[i];
      if (!value) return;
      const b = BackendCodec.decode(value);
      const stateBuf = states?.lookup(u32Key(id));
      const st = stateBuf ? BackendStateCodec.decode(stateBuf) : undefined;
      const stats = sumPerCpu(backendStats?.lookupPerCpu(u32Key(id)), (buf) => BackendStatsCodec.decode(buf));
      const ejectedUntil = st?.ejected_until_ns ?? 0n;
      const view: BackendView = {
        id,
        address: bytes16ToIp(b.addr),
        port: b.port,
        weight: b.weight,
        state: stateName(b.state),
        local: (b.flags & LB_BACKEND_F_LOCAL) !== 0,
        rotation: (slots ? memberSets.get(b.service_id)?.has(id) : b.state === LB_BACKEND_ACTIVE)
          ? 'in-rotation'
          : 'out',
        ejected: ejectedUntil > nowNs,
        ejectedForMs: ejectedUntil > nowNs ? Number((ejectedUntil - nowNs) / 1_000_000n) : 0,
        consecutiveFailures: st?.consecutive_fails ?? 0,
        consecutiveEjections: st?.consecutive_ejects ?? 0,
        activeConnections: Number(st?.active ?? 0n),
        connects: Number(st?.connects ?? 0n),
        connectFailures: Number(stats.connect_failures ?? 0n),
        ejections: Number(stats.ejections ?? 0n),
      };
      const list = byService.get(b.service_id) ?? [];
      byService.set(b.service_id, list);
      list.push(view);
    });

    const serviceViews: ServiceView[] = [];
    serviceList.keys.forEach((key, i) => {
      const value = serviceList.values[i];
      if (!value) return;
      const k = ServiceKeyCodec.decode(key);
      const s = ServiceCodec.decode(value);
      const stats = sumPerCpu(serviceStats?.lookupPerCpu(u32Key(s.id)), (buf) =>
        ServiceStatsCodec.decode(buf),
      );
      serviceViews.push({
        id: s.id,
        vip: bytes16ToIp(k.addr),
        port: k.port,
        protocol: PROTOCOLS[k.proto] ?? String(k.proto),
        algorithm: ALGORITHMS[s.algorithm] ?? `unknown(${s.algorithm})`,
        affinity: (s.flags & LB_SVC_F_AFFINITY) !== 0,
        affinityTimeoutS: s.affinity_timeout_s,
        ejectThreshold: s.eject_threshold,
        ejectBaseMs: s.eject_base_ms,
        maxEjectPercent: s.max_eject_pct,
        slots: s.slot_count,
        // the kernel counts connects per backend: a service's are its backends'
        connects: (byService.get(s.id) ?? []).reduce((sum, b) => sum + b.connects, 0),
        connectFailures: Number(stats.connect_failures ?? 0n),
        noBackend: Number(stats.no_backend ?? 0n),
        ejections: Number(stats.ejections ?? 0n),
        backends: (byService.get(s.id) ?? []).sort((a, b) => a.id - b.id),
      });
    });
    serviceViews.sort(
      (a, b) => a.vip.localeCompare(b.vip) || a.port - b.port || a.protocol.localeCompare(b.protocol),
    );

    const maps: MapView[] = [];
    if (existsSync(mapsDir)) {
      for (const name of readdirSync(mapsDir).sort()) {
        const path = join(mapsDir, name);
        if (statSync(path).isDirectory()) continue;
        let map = opened.get(name);
        try {
          map ??= bpf.openPinnedMap(path);
        } catch {
          continue; // a pin that is not a map (a program or link pinned by hand)
        }
        opened.set(name, map);
        maps.push(mapView(map, path));
      }
    }
    return { bpffs, services: serviceViews, maps, links };
  } finally {
    for (const map of opened.values()) map.close();
  }
}
