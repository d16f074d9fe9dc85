/**
 * The typed contract of the native addon (native/src/*.cc, built to native/build/Release/sluice_bpf.node).
 * Everything outside native/ reaches libbpf only through native/index.ts, which implements these types.
 * The addon is generic: Buffers in and out, no knowledge of sluice's programs or maps.
 */

/** Every addon failure: an Error with the errno name, the number, the operation and (loads) the verifier log. */
export interface BpfErrorFields {
  /** errno name, e.g. 'ENOENT', 'E2BIG', 'EPERM', 'EINVAL'. */
  readonly code: string;
  /** positive errno number. */
  readonly errno: number;
  /** the libbpf/syscall operation that failed, e.g. 'bpf_object__load', 'bpf_map_update_elem'. */
  readonly op: string;
  /** verifier log for a failed program load, when the kernel produced one. */
  readonly log?: string;
}

export type MapUpdateFlag = 'any' | 'noexist' | 'exist';

export interface MapInfo {
  readonly id: number;
  readonly name: string;
  /** kernel map type name, e.g. 'hash', 'array', 'percpu_hash', 'lru_hash', 'sockhash', 'array_of_maps'. */
  readonly type: string;
  readonly typeId: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
  /** BTF type ids of key and value (0 when the map has no BTF). */
  readonly btfKeyTypeId: number;
  readonly btfValueTypeId: number;
}

export interface ProgramInfo {
  readonly id: number;
  readonly name: string;
  /** kernel program type name, e.g. 'cgroup_sock_addr', 'sock_ops', 'sk_msg', 'xdp', 'tracing'. */
  readonly type: string;
  /** the ELF section the program came from, e.g. 'cgroup/connect4'. */
  readonly section: string;
  readonly tag: string;
  /** libbpf attach type name from the section, e.g. 'cgroup_inet4_connect' ('' when unknown). */
  readonly attachType?: string;
  /** the kernel's (15-character) name of the program. */
  readonly kernelName?: string;
  readonly typeId?: number;
}

export interface LinkInfo {
  /** 'link': a bpf_link; 'prog_attach': a legacy bpf_prog_attach (sk_msg on kernels without sockmap links). */
  readonly kind: 'link' | 'prog_attach';
  /** kernel link id (0 for prog_attach). */
  readonly id: number;
  /** link type name ('cgroup', 'xdp', 'iter', 'sockmap'), or the attach type for prog_attach. */
  readonly type: string;
  readonly progId: number;
  /** false once detached (known for cgroup and XDP links and prog_attach; others always report true). */
  readonly attached: boolean;
  /** XDP links: 'native' | 'generic'; '' otherwise. */
  readonly mode: string;
}

export interface BpfMap {
  readonly name: string;
  readonly fd: number;
  info(): MapInfo;
  /** The value for a key, or undefined when absent. Per-CPU maps: use lookupPerCpu. */
  lookup(key: Buffer): Buffer | undefined;
  /** One value per possible CPU, for per-CPU maps. */
  lookupPerCpu(key: Buffer): Buffer[] | undefined;
  update(key: Buffer, value: Buffer, flag?: MapUpdateFlag): void;
  /** Per-CPU maps: one value per possible CPU. */
  updatePerCpu(key: Buffer, values: Buffer[], flag?: MapUpdateFlag): void;
  /** true when the key existed. */
  delete(key: Buffer): boolean;
  /** All keys, in the kernel's iteration order. */
  keys(): Buffer[];
  /**
   * Batched operations (BPF_MAP_*_BATCH). Inputs are packed: `count` fixed-size keys back to back in
   * one Buffer, and as many values in another (per-CPU maps: each value holds all CPUs' values, 8-byte
   * aligned), so a large batch costs one argument, not one Buffer per entry. This kernel refuses flags
   * other than 'any' for batch updates (EINVAL).
   */
  updateBatch(keys: Buffer, values: Buffer, count: number, flag?: MapUpdateFlag): void;
  /** Every entry, read in batches. */
  lookupBatch(): { keys: Buffer[]; values: Buffer[] };
  /** Deletes `count` packed keys (absent ones are skipped); returns how many were deleted. */
  deleteBatch(keys: Buffer, count: number): number;
  /** Pins the map at a bpffs path. */
  pin(path: string): void;
  /** Releases the fd (idempotent; also done on GC). */
  close(): void;
}

export type XdpMode = 'native' | 'generic';

export interface BpfLink {
  readonly fd: number;
  /** how the attachment was made; sk_msg falls back to 'prog_attach' when the kernel lacks sockmap links. */
  readonly kind?: 'link' | 'prog_attach';
  /** where this handle pinned the link or opened it from. */
  readonly pinnedPath?: string;
  info?(): LinkInfo;
  pin(path: string): void;
  unpin(): void;
  /** Atomically replaces the program behind this link (bpf_link_update). */
  update(program: BpfProgram): void;
  /** Detaches the program (bpf_link_detach) even while pins exist. */
  detach(): void;
  close(): void;
}

export interface XdpLink extends BpfLink {
  /** The mode actually attached: native when the driver has it, else generic. */
  readonly mode: XdpMode;
}

export interface TestRunOptions {
  /** packet bytes (for XDP/skb programs). */
  data?: Buffer;
  /** room for the output packet (defaults to data length + 256, enough for encapsulation). */
  dataOutSize?: number;
  /** optional context (e.g. struct xdp_md). */
  ctx?: Buffer;
  /** room for the output context (defaults to ctx length). */
  ctxOutSize?: number;
  repeat?: number;
  /**
   * BPF_PROG_RUN flags, passed as given (e.g. BPF_F_TEST_XDP_LIVE_FRAMES: XDP frames are really
   * passed/transmitted on ctx's ingress_ifindex, each repetition from a page-pool frame whose
   * pointers, not contents, are reset; no dataOut then — only inside a test-created netns).
   */
  flags?: number;
  /** CPU to run on with BPF_F_TEST_RUN_ON_CPU (the kernel takes it for raw tracepoints only). */
  cpu?: number;
  /** frames per batch with BPF_F_TEST_XDP_LIVE_FRAMES (kernel default 64, at most 256). */
  batchSize?: number;
}

/** BPF_PROG_RUN flags (include/uapi/linux/bpf.h). */
export const TestRunFlags = { runOnCpu: 1, xdpLiveFrames: 2 } as const;

export interface TestRunResult {
  readonly retval: number;
  /** average run time per repetition, in nanoseconds, as the kernel reports it. */
  readonly durationNs: number;
  readonly dataOut: Buffer;
  /** the context after the run, when ctx was given. */
  readonly ctxOut?: Buffer;
}

export type SockmapAttachMethod = 'auto' | 'link' | 'prog_attach';

export interface SockmapAttachOptions {
  /**
   * auto (default): a bpf_link, falling back to bpf_prog_attach when the kernel refuses sockmap links;
   * 'link' or 'prog_attach' force one. A prog_attach attachment cannot be pinned; its detach()/close()
   * (and GC) call bpf_prog_detach2.
   */
  method?: SockmapAttachMethod;
}

export interface XdpAttachOptions {
  /** network namespace of the ifindex: a name under /var/run/netns or a path (default: the caller's). */
  netns?: string;
}

export interface BpfProgram {
  readonly name: string;
  readonly fd: number;
  info(): ProgramInfo;
  /**
   * Attaches to a cgroup v2 directory with the attach type given by the section (connect4, sock_ops, ...);
   * attachType (a libbpf attach type name such as 'cgroup_inet4_connect') overrides it, e.g. for a
   * program opened from a pin.
   */
  attachCgroup(cgroupPath: string, attachType?: string): BpfLink;
  /** XDP on an interface; 'auto' tries native then falls back to generic. */
  attachXdp(ifindex: number, mode?: XdpMode | 'auto', options?: XdpAttachOptions): XdpLink;
  /**
   * sk_msg verdict (or sk_skb) program on a sockmap/sockhash. A bpf_link where the kernel has sockmap
   * links (6.10+), else a bpf_prog_attach attachment that behaves like one (link.kind tells which).
   */
  attachSockmap(map: BpfMap, attachType?: string, options?: SockmapAttachOptions): BpfLink;
  /** BPF iterator program (e.g. iter/tcp, iter/udp). */
  attachIter(): BpfLink;
  testRun(options: TestRunOptions): TestRunResult;
  pin(path: string): void;
  /** Releases the fd (idempotent; also done on GC; objects close their programs). */
  close?(): void;
}

export interface OpenObjectOptions {
  /**
   * bpffs directory where maps declared with LIBBPF_PIN_BY_NAME are pinned (and reused when already there).
   * Without it such maps are not pinned at all (never libbpf's implicit /sys/fs/bpf).
   */
  pinRoot?: string;
  /** Values for `const volatile` globals in .rodata, by variable name, set before load; sizes must match. */
  globals?: Record<string, Buffer>;
  /** max_entries overrides by map name, set before load (capacity settings). */
  mapMaxEntries?: Record<string, number>;
  /** Programs to leave out of the load (e.g. one whose kfunc this kernel lacks). */
  skipPrograms?: string[];
}

export interface BpfObject {
  readonly path: string;
  programs(): BpfProgram[];
  maps(): BpfMap[];
  program(name: string): BpfProgram;
  map(name: string): BpfMap;
  close(): void;
}

export interface CreateMapOptions {
  /** map type name as in MapInfo.type */
  type: string;
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags?: number;
  /** for array_of_maps/hash_of_maps: an inner map that is the template. */
  innerMap?: BpfMap;
}

export interface NativeBpf {
  /** Opens, configures and loads an object file. A failed load throws with the verifier log. */
  loadObject(path: string, options?: OpenObjectOptions): BpfObject;
  openPinnedMap(path: string): BpfMap;
  openPinnedLink(path: string): BpfLink;
  openPinnedProgram(path: string): BpfProgram;
  createMap(options: CreateMapOptions): BpfMap;
  /** Reads all output of an iterator link (runs the iterator program once over its objects). */
  runIter(link: BpfLink): Buffer;
  possibleCpus(): number;
}
