/**
 * Rendezvous (highest random weight) hashing: every (item, candidate) pair gets a score and an item goes to
 * the `count` candidates with the highest scores. When a candidate leaves, only its items move; when one
 * joins, it takes about 1/n of the items. Pure and deterministic.
 */

/** 32-bit FNV-1a followed by a murmur3 finaliser (FNV alone mixes the last bytes poorly). */
export function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The `count` candidates that own `item`, best first; ties are broken by candidate name. */
export function rendezvousOwners(item: string, candidates: Iterable<string>, count: number): string[] {
  const scored: { name: string; score: number }[] = [];
  for (const name of candidates) scored.push({ name, score: hash32(`${item}\u0000${name}`) });
  scored.sort((a, b) => b.score - a.score || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return scored.slice(0, count).map((s) => s.name);
}
