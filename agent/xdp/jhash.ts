/**
 * Bob Jenkins' lookup3 hash as the kernel has it (include/linux/jhash.h), bit for bit: the XDP program
 * hashes flows with it (bpf/lib/xdp_hash.h), and the agent needs the same numbers to know which backend
 * a flow gets and to seed Maglev permutations.
 */

export const JHASH_INITVAL = 0xdeadbeef;

const rol32 = (word: number, shift: number): number => ((word << shift) | (word >>> (32 - shift))) >>> 0;

interface State {
  a: number;
  b: number;
  c: number;
}

function mix(s: State): void {
  s.a = (s.a - s.c) >>> 0;
  s.a = (s.a ^ rol32(s.c, 4)) >>> 0;
  s.c = (s.c + s.b) >>> 0;
  s.b = (s.b - s.a) >>> 0;
  s.b = (s.b ^ rol32(s.a, 6)) >>> 0;
  s.a = (s.a + s.c) >>> 0;
  s.c = (s.c - s.b) >>> 0;
  s.c = (s.c ^ rol32(s.b, 8)) >>> 0;
  s.b = (s.b + s.a) >>> 0;
  s.a = (s.a - s.c) >>> 0;
  s.a = (s.a ^ rol32(s.c, 16)) >>> 0;
  s.c = (s.c + s.b) >>> 0;
  s.b = (s.b - s.a) >>> 0;
  s.b = (s.b ^ rol32(s.a, 19)) >>> 0;
  s.a = (s.a + s.c) >>> 0;
  s.c = (s.c - s.b) >>> 0;
  s.c = (s.c ^ rol32(s.b, 4)) >>> 0;
  s.b = (s.b + s.a) >>> 0;
}

function final(s: State): void {
  s.c = (s.c ^ s.b) >>> 0;
  s.c = (s.c - rol32(s.b, 14)) >>> 0;
  s.a = (s.a ^ s.c) >>> 0;
  s.a = (s.a - rol32(s.c, 11)) >>> 0;
  s.b = (s.b ^ s.a) >>> 0;
  s.b = (s.b - rol32(s.a, 25)) >>> 0;
  s.c = (s.c ^ s.b) >>> 0;
  s.c = (s.c - rol32(s.b, 16)) >>> 0;
  s.a = (s.a ^ s.c) >>> 0;
  s.a = (s.a - rol32(s.c, 4)) >>> 0;
  s.b = (s.b ^ s.a) >>> 0;
  s.b = (s.b - rol32(s.a, 14)) >>> 0;
  s.c = (s.c ^ s.b) >>> 0;
  s.c = (s.c - rol32(s.b, 24)) >>> 0;
}

/** jhash(key, length, initval): bytes, read as little-endian words. */
export function jhash(key: Uint8Array, initval: number): number {
  let length = key.length;
  const start = (JHASH_INITVAL + length + initval) >>> 0;
  const s: State = { a: start, b: start, c: start };
  let k = 0;
  const le = (i: number): number =>
    ((key[i] ?? 0) | ((key[i + 1] ?? 0) << 8) | ((key[i + 2] ?? 0) << 16) | ((key[i + 3] ?? 0) << 24)) >>> 0;
  while (length > 12) {
    s.a = (s.a + le(k)) >>> 0;
    s.b = (s.b + le(k + 4)) >>> 0;
    s.c = (s.c + le(k + 8)) >>> 0;
    mix(s);
    length -= 12;
    k += 12;
  }
  if (length === 0) return s.c;
  // The tail: bytes beyond `length` read as zero, which is what the kernel's fall-through switch adds.
  const tail = new Uint8Array(12);
  tail.set(key.subarray(k, k + length));
  const tailWord = (i: number): number =>
    ((tail[i] ?? 0) | ((tail[i + 1] ?? 0) << 8) | ((tail[i + 2] ?? 0) << 16) | ((tail[i + 3] ?? 0) << 24)) >>>
    0;
  s.a = (s.a + tailWord(0)) >>> 0;
  s.b = (s.b + tailWord(4)) >>> 0;
  s.c = (s.c + tailWord(8)) >>> 0;
  final(s);
  return s.c;
}

/** jhash2(words, length, initval): 32-bit words. */
export function jhash2(words: readonly number[], initval: number): number {
  let length = words.length;
  const start = (JHASH_INITVAL + (length << 2) + initval) >>> 0;
  const s: State = { a: start, b: start, c: start };
  let k = 0;
  while (length > 3) {
    s.a = (s.a + (words[k] ?? 0)) >>> 0;
    s.b = (s.b + (words[k + 1] ?? 0)) >>> 0;
    s.c = (s.c + (words[k + 2] ?? 0)) >>> 0;
    mix(s);
    length -= 3;
    k += 3;
  }
  if (length === 0) return s.c;
  if (length >= 3) s.c = (s.c + (words[k + 2] ?? 0)) >>> 0;
  if (length >= 2) s.b = (s.b + (words[k + 1] ?? 0)) >>> 0;
  s.a = (s.a + (words[k] ?? 0)) >>> 0;
  final(s);
  return s.c;
}

/** jhash_3words(a, b, c, initval). */
export function jhash3words(a: number, b: number, c: number, initval: number): number {
  const add = (JHASH_INITVAL + (3 << 2) + initval) >>> 0;
  const s: State = { a: (a + add) >>> 0, b: (b + add) >>> 0, c: (c + add) >>> 0 };
  final(s);
  return s.c;
}
