/**
 * Weighted Maglev (Eisenbud et al., NSDI 2016) as a pure function: every backend walks its own
 * permutation of the table, given by an offset and a skip from two seeded hashes of its key, and claims
 * the next free slot on each of its turns. Turns are handed out in proportion to weight: in every round
 * each backend earns weight / max weight credit and takes a turn per whole credit, so a backend with
 * half the weight claims a slot every other round. The result depends only on the backends' keys,
 * weights, the size and the seed, never on input order, so every node builds the same table.
 */
import { jhash } from './jhash';

export interface MaglevBackend {
  /** Stable identity hashed for the permutation (e.g. the backend address): same key, same slots. */
  readonly key: string;
  /** The value written into the table (the datapath's backend id; never 0). */
  readonly id: number;
  /** Relative weight; 0 leaves the backend out. */
  readonly weight: number;
}

export interface MaglevOptions {
  /** Table size; must be prime so every skip generates a full permutation. */
  readonly size: number;
  /** Seed of the permutation hashes; the same on every node. */
  readonly seed: number;
}

/** A second, independent seed for the skip hash. */
const SKIP_SEED_XOR = 0x9e3779b9;

export function isPrime(n: number): boolean {
  if (!Number.isInteger(n) || n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

export function validateMaglevOptions(options: MaglevOptions): void {
  if (!isPrime(options.size)) throw new RangeError(`maglev size: ${options.size} is not a prime`);
  if (options.size > 0x7fffffff) throw new RangeError(`maglev size: ${options.size} is too large`);
  if (!Number.isInteger(options.seed) || options.seed < 0 || options.seed > 0xffffffff) {
    throw new RangeError(`maglev seed: ${options.seed} is not a 32-bit unsigned integer`);
  }
}

function validateBackends(backends: readonly MaglevBackend[]): void {
  const keys = new Set<string>();
  for (const [i, backend] of backends.entries()) {
    if (keys.has(backend.key)) throw new RangeError(`backends[${i}].key: ${backend.key} appears twice`);
    keys.add(backend.key);
    if (!Number.isInteger(backend.id) || backend.id <= 0 || backend.id > 0xffffffff) {
      throw new RangeError(`backends[${i}].id: ${backend.id} must be an integer in 1..2^32-1`);
    }
    if (!Number.isFinite(backend.weight) || backend.weight < 0) {
      throw new RangeError(`backends[${i}].weight: ${backend.weight} must be a finite number >= 0`);
    }
  }
}

/** Builds the lookup table: slot → backend id (0 in every slot when no backend has weight). */
export function buildMaglevTable(backends: readonly MaglevBackend[], options: MaglevOptions): Uint32Array {
  validateMaglevOptions(options);
  validateBackends(backends);
  const { size, seed } = options;
  const table = new Uint32Array(size);
  const live = backends
    .filter((b) => b.weight > 0)
    .sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : 0));
  if (live.length === 0) return table;

  const count = live.length;
  const offset = new Float64Array(count);
  const skip = new Float64Array(count);
  const next = new Float64Array(count);
  const credit = new Float64Array(count);
  const share = new Float64Array(count);
  const maxWeight = Math.max(...live.map((b) => b.weight));
  live.forEach((backend, i) => {
    const key = Buffer.from(backend.key, 'utf8');
    offset[i] = jhash(key, seed) % size;
    skip[i] = (jhash(key, (seed ^ SKIP_SEED_XOR) >>> 0) % (size - 1)) + 1;
    share[i] = backend.weight / maxWeight;
  });

  const taken = new Uint8Array(size);
  let filled = 0;
  while (filled < size) {
    for (let i = 0; i < count && filled < size; i++) {
      credit[i]! += share[i]!;
      while (credit[i]! >= 1 && filled < size) {
        credit[i]! -= 1;
        // The backend's next preferred slot that is still free: (offset + j * skip) mod size.
        let slot = (offset[i]! + next[i]! * skip[i]!) % size;
        while (taken[slot]) {
          next[i]! += 1;
          slot = (offset[i]! + next[i]! * skip[i]!) % size;
        }
        next[i]! += 1;
        taken[slot] = 1;
        table[slot] = live[i]!.id;
        filled++;
      }
    }
  }
  return table;
}

/** How many slots each backend id holds. */
export function maglevShares(table: Uint32Array): Map<number, number> {
  const shares = new Map<number, number>();
  for (const id of table) shares.set(id, (shares.get(id) ?? 0) + 1);
  return shares;
}

/** Positions whose backend differs between two tables of the same size. */
export function maglevDiff(before: Uint32Array, after: Uint32Array): number[] {
  if (before.length !== after.length) throw new RangeError('maglev tables differ in size');
  const changed: number[] = [];
  for (let i = 0; i < after.length; i++) if (before[i] !== after[i]) changed.push(i);
  return changed;
}
