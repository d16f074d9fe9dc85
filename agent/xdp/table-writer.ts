/**
 * Writes Maglev tables into the datapath's one big array (sluice_xdp_maglev_v1: ring r holds positions
 * r*size .. r*size+size-1). Only the positions that differ from what the ring holds are written, in
 * batches (Katran's position deltas): a backend change touches about 1/N of a table, and each position
 * is one 32-bit store, so a packet always reads either its old or its new backend, never garbage.
 */
import type { BpfMap } from '../../native/types';

/** Where positions land: the BPF array, or memory in unit tests. */
export interface MaglevTableStore {
  /** Writes backendIds[i] at absolute position indexes[i]. */
  write(indexes: readonly number[], backendIds: readonly number[]): void;
}

export class MemoryMaglevStore implements MaglevTableStore {
  readonly positions: Uint32Array;
  /** Sizes of the write calls, for asserting on batching. */
  readonly batches: number[] = [];

  constructor(capacity: number) {
    this.positions = new Uint32Array(capacity);
  }

  write(indexes: readonly number[], backendIds: readonly number[]): void {
    if (indexes.length !== backendIds.length) throw new RangeError('indexes and backendIds differ in length');
    for (const [i, index] of indexes.entries()) {
      if (index >= this.positions.length) throw new RangeError(`position ${index} is beyond the table`);
      this.positions[index] = backendIds[i]!;
    }
    this.batches.push(indexes.length);
  }
}

export class BpfMaglevStore implements MaglevTableStore {
  constructor(private readonly map: BpfMap) {}

  write(indexes: readonly number[], backendIds: readonly number[]): void {
    // The batch call takes packed records: u32 positions, u32 backend ids.
    const keys = Buffer.alloc(indexes.length * 4);
    const values = Buffer.alloc(backendIds.length * 4);
    for (const [i, index] of indexes.entries()) keys.writeUInt32LE(index, i * 4);
    for (const [i, id] of backendIds.entries()) values.writeUInt32LE(id, i * 4);
    this.map.updateBatch(keys, values, indexes.length);
  }
}

export interface TableWriteResult {
  /** positions written */
  readonly written: number;
  /** write calls made */
  readonly batches: number;
}

export class MaglevTableWriter {
  private readonly rings = new Map<number, Uint32Array>();

  constructor(
    private readonly store: MaglevTableStore,
    /** entries per ring (the Maglev size) */
    private readonly size: number,
    /** ring count the store has room for */
    private readonly maxRings: number,
    private readonly batchSize = 16_384,
  ) {
    if (!Number.isInteger(batchSize) || batchSize < 1)
      throw new RangeError(`batchSize: ${batchSize} must be >= 1`);
  }

  /** What the writer believes a ring holds (all zero when never written). */
  current(ring: number): Uint32Array {
    return this.rings.get(ring) ?? new Uint32Array(this.size);
  }

  /** Records what a ring already holds (read back from pinned maps after a restart); writes nothing. */
  adopt(ring: number, table: Uint32Array): void {
    if (table.length !== this.size) {
      throw new RangeError(`table: has ${table.length} entries, the ring size is ${this.size}`);
    }
    this.rings.set(ring, Uint32Array.from(table));
  }

  /** Brings a ring to `table`, writing only the positions that change. */
  apply(ring: number, table: Uint32Array): TableWriteResult {
    if (!Number.isInteger(ring) || ring < 0 || ring >= this.maxRings) {
      throw new RangeError(`ring: ${ring} is outside 0..${this.maxRings - 1}`);
    }
    if (table.length !== this.size) {
      throw new RangeError(`table: has ${table.length} entries, the ring size is ${this.size}`);
    }
    const before = this.current(ring);
    const base = ring * this.size;
    let indexes: number[] = [];
    let ids: number[] = [];
    let written = 0;
    let batches = 0;
    const flush = (): void => {
      if (indexes.length === 0) return;
      this.store.write(indexes, ids);
      written += indexes.length;
      batches++;
      indexes = [];
      ids = [];
    };
    for (let i = 0; i < this.size; i++) {
      if (before[i] !== table[i]) {
        indexes.push(base + i);
        ids.push(table[i]!);
        if (indexes.length >= this.batchSize) flush();
      }
    }
    flush();
    this.rings.set(ring, Uint32Array.from(table));
    return { written, batches };
  }

  /** Empties a ring (after its VIP is gone). */
  clear(ring: number): TableWriteResult {
    const result = this.apply(ring, new Uint32Array(this.size));
    this.rings.delete(ring);
    return result;
  }
}
