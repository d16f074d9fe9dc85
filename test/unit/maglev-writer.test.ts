import { describe, expect, it } from 'vitest';
import { buildMaglevTable, maglevDiff } from '../../agent/xdp/maglev';
import { MaglevTableWriter, MemoryMaglevStore } from '../../agent/xdp/table-writer';

const SIZE = 65_537;
const backends = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ key: `10.1.0.${i + 1}`, id: i + 1, weight: 1 }));

describe('Maglev table writer', () => {
  it('writes a new ring in full, in batches, at its own offset', () => {
    const store = new MemoryMaglevStore(3 * SIZE);
    const writer = new MaglevTableWriter(store, SIZE, 3, 10_000);
    const table = buildMaglevTable(backends(4), { size: SIZE, seed: 7 });
    const result = writer.apply(1, table);
    expect(result).toEqual({ written: SIZE, batches: Math.ceil(SIZE / 10_000) });
    expect(store.batches.every((n) => n <= 10_000)).toBe(true);
    expect(store.positions.subarray(SIZE, 2 * SIZE)).toEqual(table);
    expect(store.positions.subarray(0, SIZE).every((v) => v === 0)).toBe(true);
    expect(store.positions.subarray(2 * SIZE).every((v) => v === 0)).toBe(true);
  });

  it('writes only the positions that change when a backend goes', () => {
    const store = new MemoryMaglevStore(2 * SIZE);
    const writer = new MaglevTableWriter(store, SIZE, 2);
    const before = buildMaglevTable(backends(5), { size: SIZE, seed: 7 });
    const after = buildMaglevTable(backends(5).slice(1), { size: SIZE, seed: 7 });
    writer.apply(0, before);
    store.batches.length = 0;
    const result = writer.apply(0, after);
    expect(result.written).toBe(maglevDiff(before, after).length);
    expect(result.written).toBeLessThan(SIZE * 0.25);
    expect(store.batches).toEqual([result.written]);
    expect(store.positions.subarray(0, SIZE)).toEqual(after);
    // Writing the same table again writes nothing.
    expect(writer.apply(0, after)).toEqual({ written: 0, batches: 0 });
  });

  it('clears a ring to zeros and refuses rings and tables that do not fit', () => {
    const store = new MemoryMaglevStore(2 * 251);
    const writer = new MaglevTableWriter(store, 251, 2);
    writer.apply(1, buildMaglevTable(backends(2), { size: 251, seed: 1 }));
    writer.clear(1);
    expect(store.positions.every((v) => v === 0)).toBe(true);
    expect(() => writer.apply(2, new Uint32Array(251))).toThrow(/ring: 2 is outside 0..1/);
    expect(() => writer.apply(0, new Uint32Array(250))).toThrow(
      /table: has 250 entries, the ring size is 251/,
    );
  });
});
