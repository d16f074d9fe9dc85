import { describe, expect, it } from 'vitest';
import {
  buildMaglevTable,
  isPrime,
  type MaglevBackend,
  maglevDiff,
  maglevShares,
} from '../../agent/xdp/maglev';

const M = 65_537;
const SEED = 0x5eed;

const backends = (n: number, weight: (i: number) => number = () => 1): MaglevBackend[] =>
  Array.from({ length: n }, (_, i) => ({ key: `10.1.${i >> 8}.${i & 255}`, id: i + 1, weight: weight(i) }));

describe('weighted Maglev table', () => {
  it('fills every slot with a backend id', () => {
    const table = buildMaglevTable(backends(7), { size: M, seed: SEED });
    expect(table.length).toBe(M);
    expect(table.every((id) => id >= 1 && id <= 7)).toBe(true);
  });

  it.each([2, 3, 5, 10, 33])('gives each of %i equal-weight backends its share within ±1%%', (n) => {
    const shares = maglevShares(buildMaglevTable(backends(n), { size: M, seed: SEED }));
    expect(shares.size).toBe(n);
    for (const count of shares.values()) expect(Math.abs(count / M - 1 / n)).toBeLessThanOrEqual(0.01);
  });

  it.each([[[1, 2, 3]], [[1, 1, 5]], [[10, 20, 30, 40]], [[1, 100]], [[0.5, 1.5, 2]]])(
    'follows weights %j within ±1%%',
    (weights) => {
      const total = weights.reduce((a, b) => a + b, 0);
      const shares = maglevShares(
        buildMaglevTable(
          backends(weights.length, (i) => weights[i]!),
          { size: M, seed: SEED },
        ),
      );
      weights.forEach((weight, i) => {
        expect(Math.abs((shares.get(i + 1) ?? 0) / M - weight / total)).toBeLessThanOrEqual(0.01);
      });
    },
  );

  it.each([3, 5, 10, 20])('removing one of %i backends moves about 1/N of the slots, at most 1.2/N', (n) => {
    const all = backends(n);
    const before = buildMaglevTable(all, { size: M, seed: SEED });
    for (const removed of [0, Math.floor(n / 2), n - 1]) {
      const after = buildMaglevTable(
        all.filter((_, i) => i !== removed),
        { size: M, seed: SEED },
      );
      const moved = maglevDiff(before, after);
      const removedId = removed + 1;
      const ownedByRemoved = before.filter((id) => id === removedId).length;
      // Every slot of the removed backend must move; slots of the others move only as much as needed.
      expect(after.includes(removedId)).toBe(false);
      const movedFromSurvivors = moved.filter((slot) => before[slot] !== removedId).length;
      expect(moved.length).toBe(ownedByRemoved + movedFromSurvivors);
      expect(moved.length / M).toBeGreaterThanOrEqual((1 / n) * 0.98);
      expect(moved.length / M).toBeLessThanOrEqual(1.2 / n);
      expect(movedFromSurvivors / M).toBeLessThanOrEqual(0.2 / n);
      // The survivors share the freed slots evenly again.
      for (const count of maglevShares(after).values()) {
        expect(Math.abs(count / M - 1 / (n - 1))).toBeLessThanOrEqual(0.01);
      }
    }
  });

  it('adding a backend takes about 1/(N+1) of the slots and leaves the rest', () => {
    const before = buildMaglevTable(backends(9), { size: M, seed: SEED });
    const after = buildMaglevTable(backends(10), { size: M, seed: SEED });
    const moved = maglevDiff(before, after);
    expect(moved.length / M).toBeLessThanOrEqual(1.2 / 10);
    expect(moved.filter((slot) => after[slot] !== 10).length / M).toBeLessThanOrEqual(0.2 / 10);
  });

  it('is deterministic: same keys, weights and seed give the same table whatever the input order', () => {
    const list = backends(6, (i) => i + 1);
    const a = buildMaglevTable(list, { size: 251, seed: SEED });
    const b = buildMaglevTable([...list].reverse(), { size: 251, seed: SEED });
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
    const c = buildMaglevTable(list, { size: 251, seed: SEED + 1 });
    expect(Buffer.from(a.buffer).equals(Buffer.from(c.buffer))).toBe(false);
  });

  it('leaves out zero-weight backends and gives an all-zero table when none is left', () => {
    const table = buildMaglevTable(
      backends(3, (i) => (i === 1 ? 0 : 1)),
      { size: 251, seed: SEED },
    );
    expect(maglevShares(table).has(2)).toBe(false);
    expect(
      buildMaglevTable(
        backends(2, () => 0),
        { size: 251, seed: SEED },
      ).every((id) => id === 0),
    ).toBe(true);
    expect(buildMaglevTable([], { size: 251, seed: SEED }).every((id) => id === 0)).toBe(true);
  });

  it('rejects bad input naming the field', () => {
    expect(() => buildMaglevTable(backends(2), { size: 65_536, seed: 1 })).toThrow(
      /maglev size: 65536 is not a prime/,
    );
    expect(() => buildMaglevTable(backends(2), { size: 251, seed: -1 })).toThrow(/maglev seed/);
    expect(() => buildMaglevTable([{ key: 'a', id: 0, weight: 1 }], { size: 251, seed: 1 })).toThrow(
      /backends\[0\]\.id/,
    );
    expect(() =>
      buildMaglevTable(
        [
          { key: 'a', id: 1, weight: 1 },
          { key: 'a', id: 2, weight: 1 },
        ],
        { size: 251, seed: 1 },
      ),
    ).toThrow(/backends\[1\]\.key: a appears twice/);
    expect(() => buildMaglevTable([{ key: 'a', id: 1, weight: -1 }], { size: 251, seed: 1 })).toThrow(
      /backends\[0\]\.weight/,
    );
  });

  it('knows its primes', () => {
    expect([2, 3, 251, 65_537, 1_000_003].every(isPrime)).toBe(true);
    expect([0, 1, 4, 65_535, 65_536, 1.5].some(isPrime)).toBe(false);
  });
});
