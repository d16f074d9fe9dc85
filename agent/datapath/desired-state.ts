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
import {
  type BackendSpec,
  type CheckedAddress,
  checkAddress,
  checkAlgorithm,
  checkInteger,
  LbModelError,
  type ServiceSpec,
} from './model';
import { selectionTableFor } from './selection-table';
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

/** An integer in [min, max] (the common case, checked without building the field name). */
const inRange = (value: unknown, min: number, max: number): value is number =>
  typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;

const byIdentity = (a: DesiredMember, b: DesiredMember): number =>
  a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0;

// Consecutive services mostly share one config (the defaults): they share the object too (configs are
// frozen and compared by field).
let lastConfig: ServiceConfig | undefined;

function serviceConfig(
  algorithm: number,
  flags: number,
  maxEjectPct: number,
  affinityTimeoutS: number,
  ejectThreshold: number,
  ejectBaseMs: number,
  ejectMaxMs: number,
): ServiceConfig {
  const last = lastConfig;
  if (
    last !== undefined &&
    last.algorithm === algorithm &&
    last.flags === flags &&
    last.maxEjectPct === maxEjectPct &&
    last.affinityTimeoutS === affinityTimeoutS &&
    last.ejectThreshold === ejectThreshold &&
    last.ejectBaseMs === ejectBaseMs &&
    last.ejectMaxMs === ejectMaxMs
  ) {
    return last;
  }
  lastConfig = Object.freeze({
    algorithm,
    flags,
    maxEjectPct,
    affinityTimeoutS,
    ejectThreshold,
    ejectBaseMs,
    ejectMaxMs,
  });
  return lastConfig;
}

// Member identities by address and port: backends repeat across services, so each identity is one
// string (hashed once as a map key), not one new string per member of every service.
const identities = new Map<CheckedAddress, Map<number, string>>();
const IDENTITIES_MAX = 262_144;

function memberIdentity(address: CheckedAddress, port: number): string {
  let byPort = identities.get(address);
  if (byPort === undefined) {
    if (identities.size >= IDENTITIES_MAX) identities.clear();
    byPort = new Map();
    identities.set(address, byPort);
  }
  let identity = byPort.get(port);
  if (identity === undefined) {
    identity = `${address.text}|${port}`;
    byPort.set(port, identity);
  }
  return identity;
}

function desiredService(spec: ServiceSpec, index: number, settings: LbSettings): DesiredService {
  // Field names below are built only for a message: a large sync checks hundreds of thousands of fields.
  const field = `services[${index}]`;
  if (spec === null || typeof spec !== 'object') throw new LbModelError(field, 'must be an object');
  const vip = checkAddress(spec.vip, `${field}.vip`);
  const port = inRange(spec.port, 1, 65_535)
    ? spec.port
    : checkInteger(spec.port, `${field}.port`, 1, 65_535);
  const protocol = spec.protocol ?? SERVICE_DEFAULTS.protocol;
  if (protocol !== 'tcp' && protocol !== 'udp') {
    throw new LbModelError(`${field}.protocol`, `must be tcp or udp, got ${JSON.stringify(protocol)}`);
  }
  const proto = protocol === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
  const algorithm = spec.algorithm ?? SERVICE_DEFAULTS.algorithm;
  const algorithmName =
    typeof algorithm === 'string' && Object.hasOwn(LbAlgorithm, algorithm)
      ? algorithm
      : checkAlgorithm(algorithm, `${field}.algorithm`);
  const ejection = spec.ejection ?? {};
  const threshold = ejection.threshold ?? SERVICE_DEFAULTS.ejectionThreshold;
  const ejectThreshold = inRange(threshold, 0, 65_535)
    ? threshold
    : checkInteger(threshold, `${field}.ejection.threshold`, 0, 65_535);
  const baseMs = ejection.baseMs ?? SERVICE_DEFAULTS.ejectionBaseMs;
  const ejectBaseMs = inRange(baseMs, 1, 2 ** 32 - 1)
    ? baseMs
    : checkInteger(baseMs, `${field}.ejection.baseMs`, 1, 2 ** 32 - 1);
  const maxMs = ejection.maxMs ?? SERVICE_DEFAULTS.ejectionMaxMs;
  const ejectMaxMs = inRange(maxMs, 1, 2 ** 32 - 1)
    ? maxMs
    : checkInteger(maxMs, `${field}.ejection.maxMs`, 1, 2 ** 32 - 1);
  if (ejectMaxMs < ejectBaseMs)
    throw new LbModelError(`${field}.ejection.maxMs`, `must be ≥ baseMs (${ejectBaseMs})`);
  const maxEjection = ejection.maxEjectionPercent ?? SERVICE_DEFAULTS.maxEjectionPercent;
  const maxEjectPct = inRange(maxEjection, 0, 100)
    ? maxEjection
    : checkInteger(maxEjection, `${field}.ejection.maxEjectionPercent`, 0, 100);
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
  const backends = spec.backends;
  if (!Array.isArray(backends)) throw new LbModelError(`${field}.backends`, 'must be an array');

  const sorted: DesiredMember[] = new Array(backends.length);
  let activeCount = 0;
  const seen = backends.length > 16 ? new Set<string>() : undefined;
  for (let i = 0; i < backends.length; i++) {
    const backend = backends[i] as BackendSpec | null;
    if (backend === null || typeof backend !== 'object') {
      throw new LbModelError(`${field}.backends[${i}]`, 'must be an object');
    }
    const address = checkAddress(backend.address, `${field}.backends[${i}].address`);
    if (address.v4 !== vip.v4) {
      throw new LbModelError(
        `${field}.backends[${i}].address`,
        `must be ${vip.v4 ? 'IPv4' : 'IPv6'} like the VIP ${vip.text}`,
      );
    }
    const backendPort = inRange(backend.port, 1, 65_535)
      ? backend.port
      : checkInteger(backend.port, `${field}.backends[${i}].port`, 1, 65_535);
    const rawWeight = backend.weight ?? SERVICE_DEFAULTS.weight;
    const weight = inRange(rawWeight, 1, 65_535)
      ? rawWeight
      : checkInteger(rawWeight, `${field}.backends[${i}].weight`, 1, 65_535);
    const state = backend.state ?? 'active';
    if (state !== 'active' && state !== 'draining') {
      throw new LbModelError(
        `${field}.backends[${i}].state`,
        `must be active or draining, got ${JSON.stringify(state)}`,
      );
    }
    const identity = memberIdentity(address, backendPort);
    // Duplicates: a linear scan for the usual few backends, a set past that.
    let duplicate = false;
    if (seen) {
      duplicate = seen.has(identity);
      seen.add(identity);
    } else {
      for (let k = 0; k < i && !duplicate; k++) duplicate = sorted[k]!.identity === identity;
    }
    if (duplicate) {
      throw new LbModelError(
        `${field}.backends[${i}]`,
        `duplicate backend ${address.text} port ${backendPort}`,
      );
    }
    if (state === 'active') activeCount++;
    sorted[i] = {
      identity,
      address: address.text,
      addr: address.bytes,
      port: backendPort,
      weight,
      state: state === 'active' ? LB_BACKEND_ACTIVE : LB_BACKEND_DRAINING,
      flags: backend.nodeLocal ? LB_BACKEND_F_LOCAL : 0,
    };
  }
  sorted.sort(byIdentity);
  if (activeCount > settings.tableSize) {
    throw new LbModelError(
      `${field}.backends`,
      `${activeCount} active backends exceed lb.tableSize (${settings.tableSize})`,
    );
  }
  // Only `weighted` and `round-robin` (weighted round-robin) use weights; `random` and
  // `least-connections` (whose table is its panic fallback) treat members alike.
  const useWeights = algorithmName === 'weighted' || algorithmName === 'round-robin';
  const active: string[] = new Array(activeCount);
  const weights: number[] = new Array(activeCount);
  for (let i = 0, a = 0; i < sorted.length; i++) {
    const m = sorted[i]!;
    if (m.state !== LB_BACKEND_ACTIVE) continue;
    active[a] = m.identity;
    weights[a++] = useWeights ? m.weight : 1;
  }
  const table = selectionTableFor(weights, settings.tableSize);
  const keyString = serviceKeyString(vip.text, port, proto);
  return {
    keyString,
    name: spec.name ?? keyString,
    key: { addr: vip.bytes, port, proto },
    config: serviceConfig(
      LbAlgorithm[algorithmName],
      flags,
      maxEjectPct,
      affinityTimeoutS,
      ejectThreshold,
      ejectBaseMs,
      ejectMaxMs,
    ),
    members: sorted,
    active,
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
  for (let i = 0; i < services.length; i++) {
    const service = desiredService(services[i]!, i, settings);
    if (out.has(service.keyString)) {
      throw new LbModelError(`services[${i}]`, `duplicate service ${service.keyString}`);
    }
    out.set(service.keyString, service);
  }
  return out;
}
