import { isDeepStrictEqual } from 'node:util';
import type { Catalog, Service } from './catalog/types';

/** Per-service changes that turn one catalog into another. */
export interface CatalogDiff<S extends { readonly key: string } = Service> {
  /** Services that are new or whose content changed, in the new catalog's order. */
  readonly upserts: readonly S[];
  /** Keys of services that are gone. */
  readonly deletes: readonly string[];
}

/** A versioned change set as it travels to an agent: apply on top of `baseVersion` to reach `version`. */
export interface VersionedDelta<S extends { readonly key: string }> extends CatalogDiff<S> {
  readonly baseVersion: number;
  readonly version: number;
}

/** Pure diff of two catalogs by service key and deep equality (order changes are not changes). */
export function diffCatalogs(prev: Catalog | null, next: Catalog): CatalogDiff {
  // Fast path: the same services in the same order, most of them the very same (cached) objects.
  if (prev !== null && prev.services.length === next.services.length) {
    const upserts: Service[] = [];
    let sameKeys = true;
    for (let i = 0; i < next.services.length; i++) {
      const old = prev.services[i]!;
      const s = next.services[i]!;
      if (old === s) continue;
      if (old.key !== s.key) {
        sameKeys = false;
        break;
      }
      if (!isDeepStrictEqual(old, s)) upserts.push(s);
    }
    if (sameKeys) return { upserts, deletes: [] };
  }
  const before = new Map<string, Service>();
  for (const s of prev?.services ?? []) before.set(s.key, s);
  const upserts: Service[] = [];
  const seen = new Set<string>();
  for (const s of next.services) {
    seen.add(s.key);
    const old = before.get(s.key);
    if (old === undefined || (old !== s && !isDeepStrictEqual(old, s))) upserts.push(s);
  }
  const deletes: string[] = [];
  for (const key of before.keys()) if (!seen.has(key)) deletes.push(key);
  return { upserts, deletes };
}

/** True when the diff changes nothing. */
export function isEmptyDiff(diff: CatalogDiff<{ readonly key: string }>): boolean {
  return diff.upserts.length === 0 && diff.deletes.length === 0;
}

/**
 * Merges two consecutive deltas into one that goes from `a.baseVersion` to `b.version`: for every key the
 * later change wins (an upsert after a delete is an upsert, a delete after an upsert is a delete). Pure.
 */
export function coalesceDeltas<S extends { readonly key: string }>(
  a: VersionedDelta<S>,
  b: VersionedDelta<S>,
): VersionedDelta<S> {
  if (b.baseVersion !== a.version) {
    throw new Error(
      `cannot coalesce delta ${b.baseVersion}->${b.version} after ${a.baseVersion}->${a.version}`,
    );
  }
  const changes = new Map<string, S | null>();
  for (const s of a.upserts) changes.set(s.key, s);
  for (const key of a.deletes) changes.set(key, null);
  for (const s of b.upserts) {
    changes.delete(s.key); // keeps the later order
    changes.set(s.key, s);
  }
  for (const key of b.deletes) {
    changes.delete(key);
    changes.set(key, null);
  }
  const upserts: S[] = [];
  const deletes: string[] = [];
  for (const [key, s] of changes) {
    if (s === null) deletes.push(key);
    else upserts.push(s);
  }
  return { baseVersion: a.baseVersion, version: b.version, upserts, deletes };
}
