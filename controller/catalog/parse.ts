import YAML from 'yaml';
import type { z } from 'zod';
import { ipFamily, isUnspecified, normaliseIp } from './address';
import { CATALOG_DEFAULTS } from './defaults';
import { parseDuration } from './duration';
import { type JsonServicesSplit, resplitJsonServices, splitJsonServices } from './json-split';
import { CatalogSchema, fallbackMessage, IdentitySchema, type RawService, ServiceSchema } from './schema';
import {
  type Backend,
  backendId,
  type Catalog,
  type CatalogError,
  type CatalogParseResult,
  type HealthCheck,
  type Service,
  type ServicePort,
  serviceKey,
} from './types';

/** Formats a path like ['services', 2, 'backends', 0, 'weight'] as `services[2].backends[0].weight`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out;
}

/** `services[2].backends[0].weight: must be an integer from 0 to 65535` (or just the message at the root). */
export function formatCatalogError(error: CatalogError): string {
  return error.path === '' ? error.message : `${error.path}: ${error.message}`;
}

/** Recursively freezes plain objects and arrays. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** Reads the text as JSON when it looks like JSON (fast for big generated catalogs), otherwise as YAML. */
function readDocument(
  text: string,
  source: string,
): { ok: true; value: unknown } | { ok: false; errors: CatalogError[] } {
  if (/^\s*[[{]/.test(text)) {
    try {
      return { ok: true, value: JSON.parse(text) };
    } catch {
      // Flow-style YAML also starts with '{': let the YAML parser decide and report.
    }
  }
  const doc = YAML.parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    return {
      ok: false,
      errors: doc.errors.map((e) => {
        const at = e.linePos?.[0];
        const where = at ? ` at line ${at.line}, column ${at.col}` : '';
        const reason = e.message.split('\n')[0]?.replace(/ at line \d+, column \d+:?$/, '');
        return { path: '', message: `${source}: invalid YAML${where}: ${reason}` };
      }),
    };
  }
  return { ok: true, value: doc.toJS({ maxAliasCount: 1000 }) ?? null };
}

function zodErrors(error: z.ZodError, prefix: readonly PropertyKey[] = []): CatalogError[] {
  const errors: CatalogError[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys)
        errors.push({ path: formatPath([...prefix, ...issue.path, key]), message: 'unknown field' });
    } else {
      errors.push({ path: formatPath([...prefix, ...issue.path]), message: issue.message });
    }
  }
  return errors;
}

/** Parses a duration default from defaults.ts (they are literals, checked by the tests). */
function defaultMs(text: string): number {
  const ms = parseDuration(text);
  if (ms === null) throw new Error(`bad default duration ${text}`);
  return ms;
}

function normaliseService(raw: RawService, at: string, errors: CatalogError[]): Service {
  const namespace = raw.namespace ?? CATALOG_DEFAULTS.namespace;

  // VIPs: one address or a list of one per family.
  const vipTexts = typeof raw.vip === 'string' ? [raw.vip] : raw.vip;
  const vips: string[] = [];
  // Syntax and count were checked by the schema; here: unspecified addresses and one VIP per family.
  vipTexts.forEach((text, i) => {
    const path = typeof raw.vip === 'string' ? `${at}.vip` : `${at}.vip[${i}]`;
    const address = normaliseIp(text);
    if (address === null) return;
    if (isUnspecified(address)) errors.push({ path, message: 'must not be the unspecified address' });
    else if (vips.some((v) => ipFamily(v) === ipFamily(address)))
      errors.push({
        path,
        message: `a second IPv${ipFamily(address)} VIP is not allowed (one per address family)`,
      });
    else vips.push(address);
  });
  vips.sort((a, b) => ipFamily(a) - ipFamily(b));

  // Ports: names required and unique when there are several; VIP port/protocol unique within the service.
  const ports: ServicePort[] = raw.ports.map((p) => ({
    name: p.name ?? null,
    port: p.port,
    targetPort: p.targetPort ?? p.port,
    protocol: p.protocol ?? CATALOG_DEFAULTS.protocol,
  }));
  const seenNames = new Map<string, number>();
  const seenPorts = new Map<string, number>();
  ports.forEach((p, i) => {
    if (ports.length > 1 && p.name === null)
      errors.push({
        path: `${at}.ports[${i}].name`,
        message: 'is required when a service has several ports',
      });
    if (p.name !== null) {
      const first = seenNames.get(p.name);
      if (first !== undefined)
        errors.push({
          path: `${at}.ports[${i}].name`,
          message: `duplicate port name ${p.name} (also ${at}.ports[${first}])`,
        });
      else seenNames.set(p.name, i);
    }
    const id = `${p.port}/${p.protocol}`;
    const first = seenPorts.get(id);
    if (first !== undefined)
      errors.push({
        path: `${at}.ports[${i}]`,
        message: `duplicate port ${id} (also ${at}.ports[${first}])`,
      });
    else seenPorts.set(id, i);
  });

  // External IPs: distinct, not a VIP of the service, and (direct server return keeps the destination
  // port) only on services whose backends listen on the service ports themselves.
  const externalIPs: string[] = [];
  (raw.externalIPs ?? []).forEach((address, i) => {
    const path = `${at}.externalIPs[${i}]`;
    if (isUnspecified(address)) errors.push({ path, message: 'must not be the unspecified address' });
    else if (vips.includes(address))
      errors.push({ path, message: `${address} is already the service's vip` });
    else if (externalIPs.includes(address))
      errors.push({
        path,
        message: `duplicate external IP ${address} (also ${at}.externalIPs[${externalIPs.indexOf(address)}])`,
      });
    else externalIPs.push(address);
  });
  if (externalIPs.length > 0) {
    ports.forEach((p, i) => {
      if (p.targetPort !== p.port)
        errors.push({
          path: `${at}.ports[${i}].targetPort`,
          message: `must equal port (${p.port}) when the service has externalIPs: the XDP load balancer forwards with direct server return, which keeps the destination port`,
        });
    });
  }

  const hcDefaults = CATALOG_DEFAULTS.healthCheck;
  let healthCheck: HealthCheck | null = null;
  if (raw.healthCheck) {
    const hc = raw.healthCheck;
    healthCheck = {
      protocol: hc.protocol,
      path: hc.path ?? hcDefaults.path,
      service: hc.service ?? hcDefaults.service,
      port: hc.port ?? null,
      intervalMs: hc.interval ?? defaultMs(hcDefaults.interval),
      timeoutMs: hc.timeout ?? defaultMs(hcDefaults.timeout),
      healthyThreshold: hc.healthyThreshold ?? hcDefaults.healthyThreshold,
      unhealthyThreshold: hc.unhealthyThreshold ?? hcDefaults.unhealthyThreshold,
      expectedStatus: hc.expectedStatus ?? { min: 200, max: 399 },
    };
    if (healthCheck.timeoutMs > healthCheck.intervalMs)
      errors.push({ path: `${at}.healthCheck.timeout`, message: 'must not be longer than interval' });
    if (hc.path !== undefined && hc.protocol !== 'http')
      errors.push({ path: `${at}.healthCheck.path`, message: 'is only valid with protocol http' });
    if (hc.expectedStatus !== undefined && hc.protocol !== 'http')
      errors.push({ path: `${at}.healthCheck.expectedStatus`, message: 'is only valid with protocol http' });
    if (hc.service !== undefined && hc.protocol !== 'grpc')
      errors.push({ path: `${at}.healthCheck.service`, message: 'is only valid with protocol grpc' });
  }

  const od = raw.outlierDetection;
  const odDefaults = CATALOG_DEFAULTS.outlierDetection;
  const outlierDetection = od
    ? {
        consecutiveFailures: od.consecutiveFailures ?? odDefaults.consecutiveFailures,
        baseEjectionTimeMs: od.baseEjectionTime ?? defaultMs(odDefaults.baseEjectionTime),
        maxEjectionPercent: od.maxEjectionPercent ?? odDefaults.maxEjectionPercent,
      }
    : null;

  const backends: Backend[] = (raw.backends ?? []).map((b) => ({
    address: b.address,
    port: b.port ?? null,
    weight: b.weight ?? CATALOG_DEFAULTS.backendWeight,
    node: b.node ?? null,
    zone: b.zone ?? null,
  }));
  const seenBackends = new Map<string, number>();
  backends.forEach((b, i) => {
    if (externalIPs.length > 0 && b.port !== null && ports.some((p) => p.port !== b.port))
      errors.push({
        path: `${at}.backends[${i}].port`,
        message:
          'must be left out (or equal the service port) when the service has externalIPs: direct server return keeps the destination port',
      });
    if (isUnspecified(b.address))
      errors.push({ path: `${at}.backends[${i}].address`, message: 'must not be the unspecified address' });
    const id = backendId(b);
    const first = seenBackends.get(id);
    if (first !== undefined)
      errors.push({
        path: `${at}.backends[${i}]`,
        message: `duplicate backend ${id} (also ${at}.backends[${first}])`,
      });
    else seenBackends.set(id, i);
  });

  return {
    key: serviceKey(namespace, raw.name),
    name: raw.name,
    namespace,
    vips,
    externalIPs,
    ports,
    algorithm: raw.algorithm ?? CATALOG_DEFAULTS.algorithm,
    affinity: {
      mode: raw.affinity?.mode ?? CATALOG_DEFAULTS.affinity.mode,
      timeoutMs: raw.affinity?.timeout ?? defaultMs(CATALOG_DEFAULTS.affinity.timeout),
    },
    trafficDistribution: raw.trafficDistribution ?? CATALOG_DEFAULTS.trafficDistribution,
    healthCheck,
    outlierDetection,
    backends,
  };
}

/**
 * A memo of validated services keyed by their input's JSON text. Passed to successive parseCatalog() calls
 * on the same source, it makes a re-parse of a big, mostly unchanged file validate only the services that
 * changed, and return the very same frozen objects for the others (so diffs compare them by reference).
 * It keeps only the entries the latest parse used.
 */
export class CatalogParseCache {
  /** Validated services by fingerprint; `used` is the last parse (generation) that used the entry. */
  private current = new Map<string, { readonly service: Service; used: number }>();
  /** Entries new in this parse. */
  private next = new Map<string, { readonly service: Service; used: number }>();
  private generation = 1;
  /** Distinct entries of `current` used by this parse. */
  private hits = 0;
  /** The services of the last parse that succeeded (for the cross-service checks' shortcut). */
  lastServices: readonly Service[] | null = null;
  /** The last JSON text split and its split: the next split scans only what was edited since. */
  lastSplit: { readonly text: string; readonly split: JsonServicesSplit } | null = null;

  get(fingerprint: string): Service | undefined {
    return this.current.get(fingerprint)?.service;
  }

  keep(fingerprint: string, service: Service): void {
    const entry = this.current.get(fingerprint);
    if (entry?.service === service) {
      if (entry.used !== this.generation) {
        entry.used = this.generation;
        this.hits++;
      }
    } else {
      this.next.set(fingerprint, { service, used: this.generation });
    }
  }

  /** Ends a parse: the entries it used become the cache (updated in place when none went unused). */
  commit(): void {
    if (this.hits === this.current.size) {
      for (const [fingerprint, entry] of this.next) this.current.set(fingerprint, entry);
    } else {
      const kept = new Map<string, { readonly service: Service; used: number }>();
      for (const [fingerprint, entry] of this.current)
        if (entry.used === this.generation) kept.set(fingerprint, entry);
      for (const [fingerprint, entry] of this.next) kept.set(fingerprint, entry);
      this.current = kept;
    }
    this.next = new Map();
    this.hits = 0;
    this.generation++;
  }

  get size(): number {
    return this.current.size;
  }
}

/**
 * Parses and validates a catalog file (YAML, or JSON). Pure: `source` only names the file in messages.
 * On success the catalog is normalised, has every default filled in and is deep-frozen. On failure every
 * error found is returned (not just the first), each naming its path and reason.
 */
export function parseCatalog(
  text: string,
  source: string,
  options: { cache?: CatalogParseCache } = {},
): CatalogParseResult {
  const result = parseWith(text, source, options.cache);
  options.cache?.commit();
  return result;
}

/** `vip:port/protocol` (`[v6]:port/protocol`) for every address (VIPs, then external IPs) and port, address-major. */
function listenerIds(vips: readonly string[], ports: readonly Omit<ServicePort, 'name'>[]): string[] {
  const ids: string[] = [];
  for (const vip of vips)
    for (const p of ports)
      ids.push(ipFamily(vip) === 6 ? `[${vip}]:${p.port}/${p.protocol}` : `${vip}:${p.port}/${p.protocol}`);
  return ids;
}

/** listenerIds() of a validated (frozen) service, computed once per service object. */
const serviceIds = new WeakMap<Service, readonly string[]>();
function serviceListenerIds(service: Service): readonly string[] {
  let ids = serviceIds.get(service);
  if (ids === undefined) {
    ids = listenerIds([...service.vips, ...service.externalIPs], service.ports);
    serviceIds.set(service, ids);
  }
  return ids;
}

function sameIdentity(
  a: { key: string; ids: readonly string[]; portCount: number },
  b: { key: string; ids: readonly string[]; portCount: number },
): boolean {
  return (
    a.key === b.key &&
    a.portCount === b.portCount &&
    a.ids.length === b.ids.length &&
    a.ids.every((id, k) => id === b.ids[k])
  );
}

interface ServiceInput {
  /** Cache key: the service's JSON text (as written, or as re-serialised). */
  readonly fingerprint: string;
  /** The parsed service; undefined only for a cache hit on the split path. */
  readonly input: unknown;
  /** The cache's validated service for this fingerprint, when it has one. */
  readonly cached?: Service | undefined;
}

/**
 * The fast path for big JSON catalogs parsed with a cache: split the services' texts without parsing them,
 * and parse only the ones the cache does not know. Null when the text does not split cleanly or a service
 * is not valid JSON (the normal path then reports the problem).
 */
function splitInputs(
  text: string,
  cache: CatalogParseCache,
): { doc: unknown; inputs: ServiceInput[] } | null {
  const last = cache.lastSplit;
  const split = last ? resplitJsonServices(last.text, last.split, text) : splitJsonServices(text);
  cache.lastSplit = split ? { text, split } : null;
  if (!split) return null;
  try {
    const doc = JSON.parse(split.skeleton);
    const inputs = split.services.map((fingerprint): ServiceInput => {
      const cached = cache.get(fingerprint);
      return { fingerprint, input: cached ? undefined : JSON.parse(fingerprint), cached };
    });
    return { doc, inputs };
  } catch {
    return null;
  }
}

function parseWith(text: string, source: string, cache: CatalogParseCache | undefined): CatalogParseResult {
  let value: unknown;
  let inputs: ServiceInput[] | null = null;
  const fast = cache && /^\s*\{/.test(text) ? splitInputs(text, cache) : null;
  if (fast) {
    value = fast.doc;
    inputs = fast.inputs;
  } else {
    const doc = readDocument(text, source);
    if (!doc.ok) return { ok: false, errors: doc.errors };
    value = doc.value;
  }
  const parsed = CatalogSchema.safeParse(value, { error: fallbackMessage });
  if (!parsed.success) return { ok: false, errors: zodErrors(parsed.error) };
  inputs ??= parsed.data.services.map((input) => ({
    fingerprint: cache ? JSON.stringify(input) : '',
    input,
  }));

  const errors: CatalogError[] = [];
  const services: Service[] = [];
  /** Each service's identity for the cross-service checks (null when not even that is readable). */
  const identities: ({ key: string; ids: readonly string[]; portCount: number } | null)[] = [];
  /** Where each service's own errors end in `errors`. */
  const errorsEnd: number[] = [];
  const keys = new Map<string, number>();
  const listeners = new Map<string, number>();
  /** Cross-service checks: name clashes and VIP:port/protocol used twice (ids from listenerIds()). */
  const identity = (
    out: CatalogError[],
    i: number,
    { key, ids, portCount }: { key: string; ids: readonly string[]; portCount: number },
  ) => {
    const at = `services[${i}]`;
    const first = keys.get(key);
    if (first !== undefined) {
      out.push({ path: `${at}.name`, message: `service ${key} is already defined at services[${first}]` });
    } else {
      keys.set(key, i);
    }
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k]!;
      const owner = listeners.get(id);
      if (owner !== undefined && owner !== i) {
        out.push({
          path: `${at}.ports[${k % portCount}]`,
          message: `${id} is already used by services[${owner}]`,
        });
      } else {
        listeners.set(id, i);
      }
    }
  };
  const identityOf = (service: Service) => ({
    key: service.key,
    ids: serviceListenerIds(service),
    portCount: service.ports.length,
  });
  inputs.forEach(({ fingerprint, input, cached: hit }, i) => {
    const cached = hit ?? (fast ? undefined : cache?.get(fingerprint));
    if (cached) {
      cache?.keep(fingerprint, cached);
      identities.push(identityOf(cached));
      services.push(cached);
      errorsEnd.push(errors.length);
      return;
    }
    const one = ServiceSchema.safeParse(input, { error: fallbackMessage });
    if (one.success) {
      const before = errors.length;
      const service = deepFreeze(normaliseService(one.data, `services[${i}]`, errors));
      if (cache && errors.length === before) cache.keep(fingerprint, service);
      identities.push(identityOf(service));
      services.push(service);
      errorsEnd.push(errors.length);
      return;
    }
    errors.push(...zodErrors(one.error, ['services', i]));
    identities.push(null);
    errorsEnd.push(errors.length);
    // The service is invalid, but its identity may still clash with others: check what is readable.
    const id = IdentitySchema.safeParse(input);
    if (id.success) {
      const texts = typeof id.data.vip === 'string' ? [id.data.vip] : id.data.vip;
      const vips = [...texts, ...(id.data.externalIPs ?? [])]
        .map(normaliseIp)
        .filter((v): v is string => v !== null);
      const ports = id.data.ports.map((p) => ({
        port: p.port,
        targetPort: p.port,
        protocol: p.protocol ?? CATALOG_DEFAULTS.protocol,
      }));
      const key = serviceKey(id.data.namespace ?? CATALOG_DEFAULTS.namespace, id.data.name);
      identities[i] = { key, ids: listenerIds(vips, ports), portCount: ports.length };
    }
  });
  // The cross-service checks can be skipped when every service is valid and has the identity (key, VIPs
  // and ports) of the service at the same place in the last good catalog, which passed them.
  const last = cache?.lastServices;
  const sameIdentities =
    errors.length === 0 &&
    last?.length === services.length &&
    services.every((s, i) => s === last[i] || sameIdentity(identities[i]!, identityOf(last[i]!)));
  if (!sameIdentities) {
    // Each service's own errors, then its clashes with the ones before it.
    const own = errors.splice(0);
    identities.forEach((id, i) => {
      for (let k = i === 0 ? 0 : errorsEnd[i - 1]!; k < errorsEnd[i]!; k++) errors.push(own[k]!);
      if (id !== null) identity(errors, i, id);
    });
  }
  if (errors.length > 0) return { ok: false, errors };
  if (cache) cache.lastServices = services;
  const catalog: Catalog = { domain: parsed.data.domain ?? CATALOG_DEFAULTS.domain, services };
  return { ok: true, catalog: deepFreeze(catalog) };
}
