/**
 * Desired state: a pure function from plain services to what the maps should hold, without ids (the
 * diff assigns them). Each service gets its record fields, its members (identity = address and port)
 * and its selection table (slot → index into the active members).
 */
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  LB_BACKEND_ACTIVE,
  LB_BACKEND_DRAINING,
  LB_BACKEND_F_LOCAL,
  LB_SVC_F_AFFINITY,
  LbAlgorithm,
} from '../abi/lb';
import { checkAddress, checkAlgorithm, checkInteger, LbModelError, type ServiceSpec } from './model';
import { buildSelectionTable } from './selection-table';
import { type LbSettings, SERVICE_DEFAULTS } from './settings';

export interface ServiceKey {
  /** VIP, 16 bytes (v4-mapped for IPv4). */
  readonly addr: Buffer;
  readonly port: number;
  readonly proto: number;
}

/** The lb_service fields that come from configuration (id, generation and counts come from the diff). */
export interface ServiceConfig {
  readonly algorithm: number;
  readonly flags: number;
  readonly maxEjectPct: number;
  readonly affinityTimeoutS: number;
  readonly ejectThreshold: number;
  readonly ejectBaseMs: number;
  readonly ejectMaxMs: number;
}

export interface DesiredMember {
  /** identity within the service: `address|port`. */
  readonly identity: string;
  readonly address: string;
  readonly addr: Buffer;
  readonly port: number;
  readonly weight: number;
  /** LB_BACKEND_ACTIVE or LB_BACKEND_DRAINING. */
  readonly state: number;
  readonly flags: number;
}

export interface DesiredService {
  /** `tcp:[10.96.0.10]:80`: the service identity. */
  readonly keyString: string;
  readonly name: string;
  readonly key: ServiceKey;
  readonly config: ServiceConfig;
  /** every member, sorted by identity. */
  readonly members: readonly DesiredMember[];
  /** identities of the active members, in member-list order. */
  readonly active: readonly string[];
  /** slot → index into `active`. */
  readonly table: readonly number[];
}

export type DesiredState = ReadonlyMap<string, DesiredService>;

export function serviceKeyString(address: string, port: number, proto: number): string {
  const protocol = proto === IPPROTO_UDP ? 'udp' : proto === IPPROTO_TCP ? 'tcp' : String(proto);
  return `${protocol}:[${address}]:${port}`;
}

function desiredService(spec: ServiceSpec, field: string, settings: LbSettings): DesiredService {
  if (spec === null || typeof spec !== 'object') throw new LbModelError(field, 'must be an object');
  const vip = checkAddress(spec.vip, `${field}.vip`);
  const port = checkInteger(spec.port, `${field}.port`, 1, 65_535);
  const protocol = spec.protocol ?? SERVICE_DEFAULTS.protocol;
  if (protocol !== 'tcp' && protocol !== 'udp') {
    throw new LbModelError(`${field}.protocol`, `must be tcp or udp, got ${JSON.stringify(protocol)}`);
  }
  const proto = protocol === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
  const algorithmName = checkAlgorithm(spec.algorithm ?? SERVICE_DEFAULTS.algorithm, `${field}.algorithm`);
  const ejection = spec.ejection ?? {};
  const ejectThreshold = checkInteger(
    ejection.threshold ?? SERVICE_DEFAULTS.ejectionThreshold,
    `${field}.ejection.threshold`,
    0,
    65_535,
  );
  const ejectBaseMs = checkInteger(
    ejection.baseMs ?? SERVICE_DEFAULTS.ejectionBaseMs,
    `${field}.ejection.baseMs`,
    1,
    2 ** 32 - 1,
  );
  const ejectMaxMs = checkInteger(
    ejection.maxMs ?? SERVICE_DEFAULTS.ejectionMaxMs,
    `${field}.ejection.maxMs`,
    1,
    2 ** 32 - 1,
  );
  if (ejectMaxMs < ejectBaseMs)
    throw new LbModelError(`${field}.ejection.maxMs`, `must be ≥ baseMs (${ejectBaseMs})`);
  const maxEjectPct = checkInteger(
    ejection.maxEjectionPercent ?? SERVICE_DEFAULTS.maxEjectionPercent,
    `${field}.ejection.maxEjectionPercent`,
    0,
    100,
  );
  let flags = 0;
  let affinityTimeoutS = 0;
  if (spec.affinity !== undefined) {
    affinityTimeoutS = checkInteger(
      spec.affinity?.timeoutSeconds,
      `${field}.affinity.timeoutSeconds`,
      1,
      2 ** 32 - 1,
    );
    flags |= LB_SVC_F_AFFINITY;
  }
  if (!Array.isArray(spec.backends)) throw new LbModelError(`${field}.backends`, 'must be an array');

  const members = new Map<string, DesiredMember>();
  spec.backends.forEach((backend, i) => {
    const at = `${field}.backends[${i}]`;
    if (backend === null || typeof backend !== 'object') throw new LbModelError(at, 'must be an object');
    const address = checkAddress(backend.address, `${at}.address`);
    if (address.v4 !== vip.v4) {
      throw new LbModelError(`${at}.address`, `must be ${vip.v4 ? 'IPv4' : 'IPv6'} like the VIP ${vip.text}`);
    }
    const backendPort = checkInteger(backend.port, `${at}.port`, 1, 65_535);
    const weight = checkInteger(backend.weight ?? SERVICE_DEFAULTS.weight, `${at}.weight`, 1, 65_535);
    const state = backend.state ?? 'active';
    if (state !== 'active' && state !== 'draining') {
      throw new LbModelError(`${at}.state`, `must be active or draining, got ${JSON.stringify(state)}`);
    }
    const identity = `${address.text}|${backendPort}`;
    if (members.has(identity))
      throw new LbModelError(at, `duplicate backend ${address.text} port ${backendPort}`);
    members.set(identity, {
      identity,
      address: address.text,
      addr: address.bytes,
      port: backendPort,
      weight,
      state: state === 'active' ? LB_BACKEND_ACTIVE : LB_BACKEND_DRAINING,
      flags: backend.nodeLocal ? LB_BACKEND_F_LOCAL : 0,
    });
  });
  const sorted = [...members.values()].sort((a, b) =>
    a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0,
  );
  const active = sorted.filter((m) => m.state === LB_BACKEND_ACTIVE);
  if (active.length > settings.tableSize) {
    throw new LbModelError(
      `${field}.backends`,
      `${active.length} active backends exceed lb.tableSize (${settings.tableSize})`,
    );
  }
  // Only `weighted` and `round-robin` (weighted round-robin) use weights; `random` and
  // `least-connections` (whose table is its panic fallback) treat members alike.
  const useWeights = algorithmName === 'weighted' || algorithmName === 'round-robin';
  const table = buildSelectionTable(
    active.map((m) => (useWeights ? m.weight : 1)),
    settings.tableSize,
  );
  const keyString = serviceKeyString(vip.text, port, proto);
  return {
    keyString,
    name: spec.name ?? keyString,
    key: { addr: vip.bytes, port, proto },
    config: {
      algorithm: LbAlgorithm[algorithmName],
      flags,
      maxEjectPct,
      affinityTimeoutS,
      ejectThreshold,
      ejectBaseMs,
      ejectMaxMs,
    },
    members: sorted,
    active: active.map((m) => m.identity),
    table,
  };
}

/** A service's identity from its VIP, port and protocol (default tcp), as desired-state keys it. */
export function serviceRefKey(
  ref: { vip: string; port: number; protocol?: 'tcp' | 'udp' },
  field = 'service',
): string {
  const vip = checkAddress(ref.vip, `${field}.vip`);
  const port = checkInteger(ref.port, `${field}.port`, 1, 65_535);
  const protocol = ref.protocol ?? SERVICE_DEFAULTS.protocol;
  if (protocol !== 'tcp' && protocol !== 'udp') {
    throw new LbModelError(`${field}.protocol`, `must be tcp or udp, got ${JSON.stringify(protocol)}`);
  }
  return serviceKeyString(vip.text, port, protocol === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP);
}

/** What the maps should hold for these services. Throws LbModelError on bad input or a duplicate key. */
export function computeDesiredState(services: readonly ServiceSpec[], settings: LbSettings): DesiredState {
  if (!Array.isArray(services)) throw new LbModelError('services', 'must be an array');
  const out = new Map<string, DesiredService>();
  services.forEach((spec, i) => {
    const service = desiredService(spec, `services[${i}]`, settings);
    if (out.has(service.keyString)) {
      throw new LbModelError(`services[${i}]`, `duplicate service ${service.keyString}`);
    }
    out.set(service.keyString, service);
  });
  return out;
}
