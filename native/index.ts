/**
 * The typed face of the native addon: loads native/build/Release/sluice_bpf.node and wraps its raw
 * handles into the classes of ./types. Nothing else in sluice touches the raw binding.
 *
 * Lifetimes: every handle owns one kernel fd, released by close() or, failing that, when the handle
 * is garbage collected. Closing a BpfObject also closes the program and map handles it handed out
 * (open a pinned map again if it must outlive the object). Closing a link handle detaches it unless
 * the link is pinned.
 */
import { existsSync, readFileSync, unlinkSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import type {
  BpfErrorFields,
  BpfLink,
  BpfMap,
  BpfObject,
  BpfProgram,
  CreateMapOptions,
  LinkInfo,
  MapInfo,
  MapUpdateFlag,
  NativeBpf,
  OpenObjectOptions,
  ProgramInfo,
  SockmapAttachMethod,
  SockmapAttachOptions,
  TestRunOptions,
  TestRunResult,
  XdpAttachOptions,
  XdpLink,
  XdpMode,
} from './types';

export type * from './types';
export { TestRunFlags } from './types';

/** Every failure of the addon (the binding constructs this class itself, then sets the fields). */
export class BpfError extends Error implements BpfErrorFields {
  declare readonly code: string;
  declare readonly errno: number;
  declare readonly op: string;
  declare readonly log?: string;

  constructor(message: string) {
    super(message);
    this.name = 'BpfError';
  }
}

/** A BpfError raised on the TypeScript side (lookups by name, closed handles). */
function bpfError(op: string, code: string, errno: number, message: string): BpfError {
  const error = new BpfError(`${op}: ${message} (${code})`);
  Object.assign(error, { code, errno, op });
  return error;
}

const ENOENT = 2;
const EINVAL = 22;

// ---- the raw binding (native/src/*.cc) ----------------------------------------------------------

interface RawMapInfo extends MapInfo {
  readonly btfId: number;
  readonly perCpu: boolean;
  /** bytes of one value as user space sees it (per-CPU: rounded up to 8, times possible CPUs). */
  readonly valueBytes: number;
}

interface RawMap {
  fd(): number;
  info(): RawMapInfo;
  lookup(key: Buffer): Buffer | undefined;
  update(key: Buffer, value: Buffer, flag?: MapUpdateFlag): void;
  delete(key: Buffer): boolean;
  keys(): Buffer[];
  updateBatch(keys: Buffer, values: Buffer, count: number, flag?: MapUpdateFlag): void;
  lookupBatch(): { keys: Buffer; values: Buffer; count: number };
  deleteBatch(keys: Buffer, count: number): number;
  pin(path: string): void;
  close(): void;
}

interface RawLink {
  fd(): number;
  info(): LinkInfo;
  pin(path: string): void;
  update(program: RawProgram): void;
  detach(): void;
  close(): void;
}

interface RawProgram {
  fd(): number;
  info(): ProgramInfo;
  attachCgroup(path: string, attachType?: string): RawLink;
  attachXdp(ifindex: number, mode: XdpMode | 'auto', netnsPath?: string): RawLink;
  attachSockmap(map: RawMap, attachType?: string, method?: SockmapAttachMethod): RawLink;
  attachIter(): RawLink;
  testRun(options: TestRunOptions & { ctxOutSize?: number }): TestRunResult & { ctxOut?: Buffer };
  pin(path: string): void;
  close(): void;
}

interface RawObject {
  programs(): Array<{ name: string; section: string; handle: RawProgram }>;
  maps(): Array<{ name: string; handle: RawMap }>;
  close(): void;
}

interface RawBinding {
  setErrorClass(ctor: new (message: string) => Error): void;
  loadObject(path: string, options?: OpenObjectOptions): RawObject;
  createMap(options: Omit<CreateMapOptions, 'innerMap'> & { innerMap?: RawMap }): RawMap;
  openPinnedMap(path: string): RawMap;
  openPinnedProgram(path: string): RawProgram;
  openPinnedLink(path: string): RawLink;
  runIter(link: RawLink): Buffer;
  possibleCpus(): number;
  mapTypes(): string[];
}

/** The package root: the nearest directory above this file with sluice's package.json (src or dist). */
export function packageRoot(from: string = __dirname): string {
  let dir = from;
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      const parsed = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string };
      if (parsed.name === 'sluice') return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no sluice package.json above ${from}`);
    dir = parent;
  }
}

/** Where the built addon lives. */
export const addonPath = (): string => join(packageRoot(), 'native', 'build', 'Release', 'sluice_bpf.node');

let loaded: RawBinding | undefined;

/** Loads the addon on first use, so importing this module never fails on a machine without it. */
function raw(): RawBinding {
  if (!loaded) {
    const path = addonPath();
    if (!existsSync(path)) throw new Error(`native addon not built at ${path} (run make addon)`);
    const binding = require(path) as RawBinding;
    binding.setErrorClass(BpfError);
    loaded = binding;
  }
  return loaded;
}

// ---- maps ---------------------------------------------------------------------------------------

class NativeMap implements BpfMap {
  readonly name: string;
  readonly keySize: number;
  readonly valueSize: number;
  readonly perCpu: boolean;
  private readonly handle: RawMap;
  private closed = false;

  constructor(name: string | undefined, handle: RawMap) {
    this.handle = handle;
    const info = handle.info();
    this.name = name ?? info.name;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.perCpu = info.perCpu;
  }

  get fd(): number {
    return this.handle.fd();
  }

  /** @internal the raw handle, for other wrappers of this module. */
  get raw(): RawMap {
    return this.handle;
  }

  info(): MapInfo {
    const { btfId: _btfId, perCpu: _perCpu, valueBytes: _valueBytes, ...info } = this.handle.info();
    return info;
  }

  lookup(key: Buffer): Buffer | undefined {
    if (this.perCpu) throw this.perCpuMisuse('lookup', 'lookupPerCpu');
    return this.handle.lookup(key);
  }

  lookupPerCpu(key: Buffer): Buffer[] | undefined {
    if (!this.perCpu) throw this.notPerCpu('lookupPerCpu');
    const blob = this.handle.lookup(key);
    return blob === undefined ? undefined : this.splitPerCpu(blob);
  }

  update(key: Buffer, value: Buffer, flag: MapUpdateFlag = 'any'): void {
    if (this.perCpu) throw this.perCpuMisuse('update', 'updatePerCpu');
    this.handle.update(key, value, flag);
  }

  updatePerCpu(key: Buffer, values: Buffer[], flag: MapUpdateFlag = 'any'): void {
    if (!this.perCpu) throw this.notPerCpu('updatePerCpu');
    this.handle.update(key, this.joinPerCpu(values), flag);
  }

  delete(key: Buffer): boolean {
    return this.handle.delete(key);
  }

  keys(): Buffer[] {
    return this.handle.keys();
  }

  /** Per-CPU maps: each value is all CPUs' values (see joinPerCpu / splitPerCpu). */
  updateBatch(keys: Buffer, values: Buffer, count: number, flag: MapUpdateFlag = 'any'): void {
    this.handle.updateBatch(keys, values, count, flag);
  }

  lookupBatch(): { keys: Buffer[]; values: Buffer[] } {
    const { keys, values, count } = this.handle.lookupBatch();
    const valueBytes = count === 0 ? 0 : values.length / count;
    const out = { keys: new Array<Buffer>(count), values: new Array<Buffer>(count) };
    for (let i = 0; i < count; i++) {
      out.keys[i] = keys.subarray(i * this.keySize, (i + 1) * this.keySize);
      out.values[i] = values.subarray(i * valueBytes, (i + 1) * valueBytes);
    }
    return out;
  }

  deleteBatch(keys: Buffer, count: number): number {
    return this.handle.deleteBatch(keys, count);
  }

  pin(path: string): void {
    this.handle.pin(path);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.handle.close();
  }

  /** One per-CPU blob (values rounded up to 8 bytes) from one value per possible CPU. */
  joinPerCpu(values: Buffer[]): Buffer {
    const cpus = bpf.possibleCpus();
    if (values.length !== cpus) {
      throw argError(
        'updatePerCpu',
        `values must have one Buffer per possible CPU (${cpus}), got ${values.length}`,
      );
    }
    const stride = Math.ceil(this.valueSize / 8) * 8;
    const blob = Buffer.alloc(stride * cpus);
    values.forEach((value, cpu) => {
      if (value.length !== this.valueSize) {
        throw argError('updatePerCpu', `values[${cpu}] must be ${this.valueSize} bytes, got ${value.length}`);
      }
      value.copy(blob, cpu * stride);
    });
    return blob;
  }

  /** One value per possible CPU from a per-CPU blob. */
  splitPerCpu(blob: Buffer): Buffer[] {
    const stride = Math.ceil(this.valueSize / 8) * 8;
    const cpus = blob.length / stride;
    return Array.from({ length: cpus }, (_, cpu) =>
      blob.subarray(cpu * stride, cpu * stride + this.valueSize),
    );
  }

  private perCpuMisuse(op: string, instead: string): TypeError {
    return argError(op, `map ${this.name} is per-CPU: use ${instead}`);
  }

  private notPerCpu(op: string): TypeError {
    return argError(op, `map ${this.name} is not per-CPU`);
  }
}

function argError(op: string, message: string): TypeError {
  const error = new TypeError(`${op}: ${message}`);
  Object.assign(error, { code: 'EINVAL', errno: EINVAL, op });
  return error;
}

// ---- links --------------------------------------------------------------------------------------

class NativeLink implements XdpLink {
  private readonly handle: RawLink;
  private pinnedAt: string | undefined;
  private closed = false;
  /** 'link' for a bpf_link, 'prog_attach' for a legacy attachment (sk_msg on kernels without links). */
  readonly kind: 'link' | 'prog_attach';
  readonly mode: XdpMode;

  constructor(handle: RawLink, pinnedAt?: string) {
    this.handle = handle;
    this.pinnedAt = pinnedAt;
    const info = handle.info();
    this.kind = info.kind;
    this.mode = info.mode === 'generic' ? 'generic' : 'native';
  }

  get fd(): number {
    return this.handle.fd();
  }

  /** @internal */
  get raw(): RawLink {
    return this.handle;
  }

  /** Where this handle pinned the link (or opened it from), if anywhere. */
  get pinnedPath(): string | undefined {
    return this.pinnedAt;
  }

  info(): LinkInfo {
    return this.handle.info();
  }

  pin(path: string): void {
    this.handle.pin(path);
    this.pinnedAt = path;
  }

  unpin(): void {
    if (this.pinnedAt === undefined)
      throw bpfError('unpin', 'ENOENT', ENOENT, 'link is not pinned by this handle');
    try {
      unlinkSync(this.pinnedAt);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'EIO';
      throw bpfError('unlink', code, -((error as NodeJS.ErrnoException).errno ?? -5), `${this.pinnedAt}`);
    }
    this.pinnedAt = undefined;
  }

  update(program: BpfProgram): void {
    this.handle.update(rawProgram(program));
  }

  detach(): void {
    this.handle.detach();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.handle.close();
  }
}

// ---- programs -----------------------------------------------------------------------------------

class NativeProgram implements BpfProgram {
  readonly name: string;
  readonly section: string;
  private readonly handle: RawProgram;
  private closed = false;

  constructor(name: string | undefined, section: string, handle: RawProgram) {
    this.handle = handle;
    this.section = section;
    this.name = name ?? handle.info().name;
  }

  get fd(): number {
    return this.handle.fd();
  }

  /** @internal */
  get raw(): RawProgram {
    return this.handle;
  }

  info(): ProgramInfo {
    return this.handle.info();
  }

  attachCgroup(cgroupPath: string, attachType?: string): BpfLink {
    return new NativeLink(this.handle.attachCgroup(cgroupPath, attachType));
  }

  attachXdp(ifindex: number, mode: XdpMode | 'auto' = 'auto', options: XdpAttachOptions = {}): XdpLink {
    const netns = options.netns;
    const netnsPath = netns === undefined || isAbsolute(netns) ? netns : join('/var/run/netns', netns);
    return new NativeLink(this.handle.attachXdp(ifindex, mode, netnsPath));
  }

  attachSockmap(map: BpfMap, attachType?: string, options: SockmapAttachOptions = {}): BpfLink {
    return new NativeLink(this.handle.attachSockmap(rawMap(map), attachType, options.method));
  }

  attachIter(): BpfLink {
    return new NativeLink(this.handle.attachIter());
  }

  testRun(options: TestRunOptions): TestRunResult {
    return this.handle.testRun(options);
  }

  pin(path: string): void {
    this.handle.pin(path);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.handle.close();
  }
}

function rawMap(map: BpfMap): RawMap {
  if (!(map instanceof NativeMap)) throw argError('map', 'expected a map made by native/index.ts');
  return map.raw;
}

function rawProgram(program: BpfProgram): RawProgram {
  if (!(program instanceof NativeProgram))
    throw argError('program', 'expected a program made by native/index.ts');
  return program.raw;
}

// ---- objects ------------------------------------------------------------------------------------

class NativeObject implements BpfObject {
  readonly path: string;
  private readonly handle: RawObject;
  private readonly programList: NativeProgram[];
  private readonly mapList: NativeMap[];
  private closed = false;

  constructor(path: string, handle: RawObject) {
    this.path = path;
    this.handle = handle;
    try {
      this.programList = handle.programs().map((p) => new NativeProgram(p.name, p.section, p.handle));
      this.mapList = handle.maps().map((m) => new NativeMap(m.name, m.handle));
    } catch (error) {
      handle.close();
      throw error;
    }
  }

  programs(): BpfProgram[] {
    this.checkOpen('programs');
    return [...this.programList];
  }

  maps(): BpfMap[] {
    this.checkOpen('maps');
    return [...this.mapList];
  }

  program(name: string): BpfProgram {
    this.checkOpen('program');
    const found = this.programList.find((p) => p.name === name);
    if (!found) {
      const known = this.programList.map((p) => p.name).join(', ');
      throw bpfError(
        'program',
        'ENOENT',
        ENOENT,
        `no program named '${name}' in ${this.path} (has: ${known})`,
      );
    }
    return found;
  }

  /** A map by name; internal maps also by section (`.rodata`, `.bss`, `.data`). */
  map(name: string): BpfMap {
    this.checkOpen('map');
    const found =
      this.mapList.find((m) => m.name === name) ??
      (name.startsWith('.') ? this.mapList.find((m) => m.name.endsWith(name)) : undefined);
    if (!found) {
      const known = this.mapList.map((m) => m.name).join(', ');
      throw bpfError('map', 'ENOENT', ENOENT, `no map named '${name}' in ${this.path} (has: ${known})`);
    }
    return found;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const program of this.programList) program.close();
    for (const map of this.mapList) map.close();
    this.handle.close();
  }

  private checkOpen(op: string): void {
    if (this.closed) throw bpfError(op, 'EBADF', 9, `object ${this.path} is closed`);
  }
}

// ---- the module's one entry point ---------------------------------------------------------------

let cpuCount: number | undefined;

/** The addon. Beyond NativeBpf: mapTypes(), the map type names createMap accepts. */
export const bpf: NativeBpf & { mapTypes(): string[] } = {
  loadObject(path: string, options: OpenObjectOptions = {}): BpfObject {
    return new NativeObject(path, raw().loadObject(path, options));
  },
  openPinnedMap(path: string): BpfMap {
    return new NativeMap(undefined, raw().openPinnedMap(path));
  },
  openPinnedLink(path: string): BpfLink {
    return new NativeLink(raw().openPinnedLink(path), path);
  },
  openPinnedProgram(path: string): BpfProgram {
    return new NativeProgram(undefined, '', raw().openPinnedProgram(path));
  },
  createMap(options: CreateMapOptions): BpfMap {
    const { innerMap, ...rest } = options;
    const handle = raw().createMap(innerMap ? { ...rest, innerMap: rawMap(innerMap) } : rest);
    return new NativeMap(options.name, handle);
  },
  runIter(link: BpfLink): Buffer {
    if (!(link instanceof NativeLink)) throw argError('runIter', 'expected a link made by native/index.ts');
    return raw().runIter(link.raw);
  },
  possibleCpus(): number {
    cpuCount ??= raw().possibleCpus();
    return cpuCount;
  },
  mapTypes(): string[] {
    return raw().mapTypes();
  },
};
