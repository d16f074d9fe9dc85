/**
 * The per-service selection table: a list of slots, each naming a member, so that a uniformly random
 * slot picks a member in proportion to its weight in O(1) whatever the member count. Counts are the
 * weights reduced by their gcd when the sum fits the table size, else apportioned by largest remainder
 * (every member keeps at least one slot). Slots are ordered by smooth weighted round-robin, so walking
 * the table in order (round-robin, or probing past an ejected member) interleaves members evenly.
 */

const gcd = (a: number, b: number): number => {
  let x = a;
  let y = b;
  while (y) [x, y] = [y, x % y];
  return x;
};

/** Slot counts per member for the given weights (each ≥ 1) and the table size limit. */
export function apportionSlots(weights: readonly number[], tableSize: number): number[] {
  if (weights.length === 0) return [];
  if (weights.length > tableSize) {
    throw new RangeError(`${weights.length} members do not fit a selection table of ${tableSize} slots`);
  }
  for (const [i, w] of weights.entries()) {
    if (!Number.isInteger(w) || w < 1)
      throw new RangeError(`weights[${i}]: must be a positive integer, got ${w}`);
  }
  const divisor = weights.reduce(gcd);
  const reduced = weights.map((w) => w / divisor);
  const total = reduced.reduce((a, b) => a + b, 0);
  if (total <= tableSize) return reduced;

  const exact = weights.map((w) => (w * tableSize) / (total * divisor));
  const counts = exact.map((e) => Math.max(1, Math.floor(e)));
  let sum = counts.reduce((a, b) => a + b, 0);
  // Largest remainders get the slots still free; members bumped to 1 may have overdrawn, so take
  // back from those furthest above their exact share.
  const byRemainder = exact
    .map((e, i) => ({ i, r: e - Math.floor(e) }))
    .sort((a, b) => b.r - a.r || a.i - b.i);
  for (let k = 0; sum < tableSize; k = (k + 1) % byRemainder.length) {
    counts[byRemainder[k]!.i]!++;
    sum++;
  }
  while (sum > tableSize) {
    let worst = -1;
    for (let i = 0; i < counts.length; i++) {
      if (counts[i]! <= 1) continue;
      if (worst < 0 || counts[i]! - exact[i]! > counts[worst]! - exact[worst]!) worst = i;
    }
    counts[worst]!--;
    sum--;
  }
  return counts;
}

/** The slot order for the given per-member slot counts (smooth weighted round-robin). */
export function interleaveSlots(counts: readonly number[]): number[] {
  const size = counts.reduce((a, b) => a + b, 0);
  const current = counts.map(() => 0);
  const slots: number[] = [];
  for (let s = 0; s < size; s++) {
    let best = 0;
    for (let i = 0; i < counts.length; i++) {
      current[i]! += counts[i]!;
      if (current[i]! > current[best]!) best = i;
    }
    current[best]! -= size;
    slots.push(best);
  }
  return slots;
}

// Tables by weight vector and size: services mostly share a handful of weight vectors (all equal, say),
// so each distinct one is built once. Entries are frozen: callers share them.
const tableCache = new Map<string, readonly number[]>();
const TABLE_CACHE_MAX = 4096;

/** The selection table for members with these weights: slot → member index. */
export function buildSelectionTable(weights: readonly number[], tableSize: number): number[] {
  return interleaveSlots(apportionSlots(weights, tableSize));
}

let last: { weights: number[]; tableSize: number; table: readonly number[] } | undefined;

/** buildSelectionTable, shared (frozen) for every caller with the same weights and table size. */
export function selectionTableFor(weights: readonly number[], tableSize: number): readonly number[] {
  // Consecutive services usually repeat the last weight vector: checked without building a signature.
  if (last !== undefined && last.tableSize === tableSize && last.weights.length === weights.length) {
    let same = true;
    for (let i = 0; same && i < weights.length; i++) same = last.weights[i] === weights[i];
    if (same) return last.table;
  }
  let signature = String(tableSize);
  for (let i = 0; i < weights.length; i++) signature += `,${weights[i]}`;
  let table = tableCache.get(signature);
  if (!table) {
    table = Object.freeze(buildSelectionTable(weights, tableSize));
    if (tableCache.size >= TABLE_CACHE_MAX) tableCache.clear();
    tableCache.set(signature, table);
  }
  last = { weights: [...weights], tableSize, table };
  return table;
}
