import { BackendStatsCodec, ServiceStatsCodec } from '../abi/lb';

/**
 * The map operations the datapath writer needs, as an interface: the pinned BPF maps satisfy it (see
 * writer-bpf.ts) and so does an in-memory map set for unit tests (memoryLbMapSet). Keys and values are
 * the raw ABI bytes in both, so the same writer code, restore included, runs against either.
 */

export interface KvMap {
  lookup(key: Buffer): Buffer | undefined;
  update(key: Buffer, value: Buffer): void;
  delete(key: Buffer): boolean;
  /** `count` packed fixed-size keys and values (BpfMap.updateBatch). */
  updateBatch(keys: Buffer, values: Buffer, count: number): void;
  /** `count` packed fixed-size keys; absent ones are skipped. */
  deleteBatch(keys: Buffer, count: number): number;
  lookupBatch(): { keys: Buffer[]; values: Buffer[] };
}

export interface PerCpuMap {
  lookupPerCpu(key: Buffer): Buffer[] | undefined;
  updatePerCpu(key: Buffer, values: Buffer[]): void;
}

export interface LbMapSet {
  readonly services: KvMap;
  readonly backends: KvMap;
  readonly slots: KvMap;
  readonly backendState: KvMap;
  readonly backendStats: PerCpuMap;
  readonly serviceStats: PerCpuMap;
  /** possible CPUs: how many values a per-CPU lookup returns. */
  readonly cpus: number;
}

/** One operation on a memory map, for tests that check every intermediate state. */
export interface MemoryMapOp {
  readonly map: string;
  readonly op: 'update' | 'delete';
  readonly key: Buffer;
}

/** Bytes per record of a packed batch argument; throws when the length is no multiple of count. */
function recordSize(packed: Buffer, count: number, field: string): number {
  if (count === 0) return 0;
  if (packed.length % count !== 0) {
    throw new RangeError(`${field}: ${packed.length} bytes do not hold ${count} equal records`);
  }
  return packed.length / count;
}

export class MemoryKvMap implements KvMap {
  readonly entries = new Map<string, Buffer>();
  constructor(
    readonly name: string,
    readonly maxEntries: number,
    private readonly onOp?: (op: MemoryMapOp) => void,
  ) {}
  lookup(key: Buffer): Buffer | undefined {
    const value = this.entries.get(key.toString('hex'));
    return value ? Buffer.from(value) : undefined;
  }
  update(key: Buffer, value: Buffer): void {
    const hex = key.toString('hex');
    if (!this.entries.has(hex) && this.entries.size >= this.maxEntries) {
      throw Object.assign(new Error(`${this.name}: map full`), { code: 'E2BIG' });
    }
    this.entries.set(hex, Buffer.from(value));
    this.onOp?.({ map: this.name, op: 'update', key });
  }
  delete(key: Buffer): boolean {
    const existed = this.entries.delete(key.toString('hex'));
    if (existed) this.onOp?.({ map: this.name, op: 'delete', key });
    return existed;
  }
  updateBatch(keys: Buffer, values: Buffer, count: number): void {
    const keySize = recordSize(keys, count, 'keys');
    const valueSize = recordSize(values, count, 'values');
    for (let i = 0; i < count; i++) {
      this.update(
        keys.subarray(i * keySize, (i + 1) * keySize),
        values.subarray(i * valueSize, (i + 1) * valueSize),
      );
    }
  }
  deleteBatch(keys: Buffer, count: number): number {
    const keySize = recordSize(keys, count, 'keys');
    let n = 0;
    for (let i = 0; i < count; i++) if (this.delete(keys.subarray(i * keySize, (i + 1) * keySize))) n++;
    return n;
  }
  lookupBatch(): { keys: Buffer[]; values: Buffer[] } {
    const keys: Buffer[] = [];
    const values: Buffer[] = [];
    for (const [hex, value] of this.entries) {
      keys.push(Buffer.from(hex, 'hex'));
      values.push(Buffer.from(value));
    }
    return { keys, values };
  }
}

export class MemoryPerCpuMap implements PerCpuMap {
  readonly entries = new Map<string, Buffer[]>();
  constructor(
    readonly valueSize: number,
    readonly cpus: number,
  ) {}
  lookupPerCpu(key: Buffer): Buffer[] {
    const values = this.entries.get(key.toString('hex'));
    return values
      ? values.map((v) => Buffer.from(v))
      : Array.from({ length: this.cpus }, () => Buffer.alloc(this.valueSize));
  }
  updatePerCpu(key: Buffer, values: Buffer[]): void {
    if (values.length !== this.cpus)
      throw new RangeError(`need ${this.cpus} per-CPU values, got ${values.length}`);
    this.entries.set(
      key.toString('hex'),
      values.map((v) => Buffer.from(v)),
    );
  }
}

export interface MemoryLbMapSet extends LbMapSet {
  readonly services: MemoryKvMap;
  readonly backends: MemoryKvMap;
  readonly slots: MemoryKvMap;
  readonly backendState: MemoryKvMap;
  readonly backendStats: MemoryPerCpuMap;
  readonly serviceStats: MemoryPerCpuMap;
}

export function memoryLbMapSet(
  capacities: { services: number; backends: number; slots: number },
  options: { cpus?: number; onOp?: (op: MemoryMapOp) => void } = {},
): MemoryLbMapSet {
  const cpus = options.cpus ?? 2;
  return {
    services: new MemoryKvMap('services', capacities.services, options.onOp),
    backends: new MemoryKvMap('backends', capacities.backends, options.onOp),
    slots: new MemoryKvMap('slots', capacities.slots, options.onOp),
    backendState: new MemoryKvMap('backendState', capacities.backends + 1, options.onOp),
    backendStats: new MemoryPerCpuMap(BackendStatsCodec.size, cpus),
    serviceStats: new MemoryPerCpuMap(ServiceStatsCodec.size, cpus),
    cpus,
  };
}
