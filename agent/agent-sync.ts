/**
 * The agent's incremental sync, pure parts: which catalog services must be planned again after a change
 * (dirtyServices), and which datapath services that re-planning changes (datapathChange). The node agent
 * (node-agent.ts) keeps what it programmed per catalog service and hands only the difference to the
 * datapath; a full plan still runs at start-up, after a failed write and as the periodic reconcile.
 *
 * A service's programmed entries depend only on its own catalog entry (VIPs, ports, policy, backends with
 * their node, zone and weight), its backends' health and kernel ejection, and this node's name and zone
 * (fixed for the agent's life). So a service whose entry is unchanged and none of whose backends changed
 * health or ejection plans to the same entries.
 */
import type { Catalog, Protocol, Service } from '../controller/catalog';
import type { ProgrammedService, RemoteHealth } from './node-agent';

/** A datapath service's identity: VIP, port, protocol. */
export interface ProgrammedServiceRef {
  readonly vip: string;
  readonly port: number;
  readonly protocol: Protocol;
}

export const programmedKey = (s: ProgrammedServiceRef): string => `${s.vip}|${s.port}|${s.protocol}`;

/** The service part (`namespace/name`) of a healthKey (`namespace/name|address:port`). */
export function serviceOfHealthKey(key: string): string {
  const bar = key.indexOf('|');
  return bar < 0 ? key : key.slice(0, bar);
}

/** Services with a backend whose state differs between two remote-health maps. */
export function remoteHealthChanges(before: RemoteHealth, after: RemoteHealth): Set<string> {
  const out = new Set<string>();
  if (before === after) return out;
  for (const [key, value] of after) {
    const old = before.get(key);
    if (old?.state !== value.state) out.add(serviceOfHealthKey(key));
  }
  for (const key of before.keys()) if (!after.has(key)) out.add(serviceOfHealthKey(key));
  return out;
}

/**
 * Equal in value, for the plain data of catalog entries and plans (primitives, arrays, plain objects; a
 * key set to undefined differs from a missing one, which at worst plans a service again). Several times
 * faster than util.isDeepStrictEqual on these shapes.
 */
export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameValue(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b) || Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  const keys = Object.keys(x);
  if (keys.length !== Object.keys(y).length) return false;
  for (const key of keys) if (!Object.hasOwn(y, key) || !sameValue(x[key], y[key])) return false;
  return true;
}

/** Same catalog entry: the same object (the controller link keeps unchanged ones), else equal in value. */
export function sameService(a: Service, b: Service): boolean {
  return a === b || sameValue(a, b);
}

/**
 * The catalog services to plan again: those new in `next`, changed since `previous`, or listed in
 * `touched` (a backend's health or ejection changed) and still in `next`; and the keys of those that left.
 * Without a previous catalog every service is dirty. Pure.
 */
export function dirtyServices(input: {
  readonly previous: Catalog | undefined;
  readonly next: Catalog;
  readonly touched?: Iterable<string>;
}): { replan: Service[]; removed: string[] } {
  const { previous, next } = input;
  if (!previous) return { replan: [...next.services], removed: [] };
  const before = new Map<string, Service>();
  for (const s of previous.services) before.set(s.key, s);
  const touched = new Set(input.touched ?? []);
  const replan: Service[] = [];
  const present = new Set<string>();
  for (const s of next.services) {
    present.add(s.key);
    const old = before.get(s.key);
    if (!old || touched.has(s.key) || !sameService(old, s)) replan.push(s);
  }
  const removed: string[] = [];
  for (const key of before.keys()) if (!present.has(key)) removed.push(key);
  return { replan, removed };
}

/**
 * The datapath change that turns `programmed` (entries by catalog service) into the same with the
 * re-planned services' new entries and without the removed services: upserts for entries that are new
 * or differ, removals for entries no longer programmed by anyone. Pure.
 */
export function datapathChange(
  programmed: ReadonlyMap<string, readonly ProgrammedService[]>,
  replanned: ReadonlyMap<string, readonly ProgrammedService[]>,
  removed: Iterable<string>,
): { upsert: ProgrammedService[]; remove: ProgrammedServiceRef[] } {
  const upsert: ProgrammedService[] = [];
  const wanted = new Set<string>();
  for (const [service, entries] of replanned) {
    const old = new Map((programmed.get(service) ?? []).map((e) => [programmedKey(e), e]));
    for (const entry of entries) {
      const key = programmedKey(entry);
      wanted.add(key);
      const was = old.get(key);
      if (!was || !sameValue(was, entry)) upsert.push(entry);
    }
  }
  const remove: ProgrammedServiceRef[] = [];
  const gone = (entries: readonly ProgrammedService[] | undefined) => {
    for (const e of entries ?? []) {
      const key = programmedKey(e);
      if (wanted.has(key)) continue;
      wanted.add(key);
      remove.push({ vip: e.vip, port: e.port, protocol: e.protocol });
    }
  };
  for (const service of replanned.keys()) gone(programmed.get(service));
  for (const service of removed) if (!replanned.has(service)) gone(programmed.get(service));
  return { upsert, remove };
}
