/**
 * XDP load balancer benchmark.
 *
 *   make build && node dist/bench/xdp.js [--calls 100000] [--seconds 5] [--conns 1500] [--loop 200000]
 *
 * 1. Per-packet cost through BPF_PROG_TEST_RUN, in one run and interleaved: a bare XDP_PASS program
 *    (baseline), pass-through, a known flow (connection-table hit) and a new flow (Maglev choice +
 *    connection-table insert), at 1 and 10 000 VIPs; with, in the same rounds, the floors and references
 *    of test/bpf/progs/xdp_bench.bpf.c (push+pop of an outer header, the issue's hash-lookup-and-rewrite
 *    program) and the stage variants test/bpf/progs/xdp_lb_stage_*.bpf.c (where the time goes). In the
 *    in-kernel loop the encapsulating paths run through a harness that undoes the encapsulation (the
 *    kernel does not restore the packet between repetitions); the undo is measured and removed.
 *    Also one test-run call per packet (cold caches, the program itself).
 * 2. New flows against the connection-table size, next to a bare insert into each kernel LRU map type.
 * 3. The veth topology of test/support/xdp-topology.ts (client → router → node → backends), interleaved
 *    rounds: UDP packets/s (iperf3, 64-byte datagrams, one backend) and TCP connections/s (sequential
 *    connect/echo/close from two clients, three backends) with the XDP program on the node (native and
 *    generic) vs nftables DNAT with a numgen verdict map on the node. IPVS is not in this kernel.
 * Every figure is taken with the kernel's BPF run-time statistics off (they add to every program run).
 * Results go to docs/benchmarks.md between the xdp markers and to bench/results/xdp.md. Bounded: every
 * phase has a count and a deadline; namespaces and pins are removed at the end, also on failure.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ipToBytes16 } from '../agent/abi/ip';
import {
  IPPROTO_TCP,
  vipFilterSlot,
  XDP_DECAP_PROGRAM,
  XDP_LB_BENCH_NEW_PROGRAM,
  XDP_LB_BENCH_PROGRAM,
  XDP_LB_PROGRAM,
  XDP_PASS_PROGRAM,
  XdpAction,
  type XdpReasonName,
} from '../agent/abi/xdp';
import { XdpLoadBalancer, xdpLoadOptions } from '../agent/xdp/datapath';
import { type BpfObject, bpf, TestRunFlags, type XdpLink } from '../native/index';
import { firstLine } from '../test/support/child-output';
import { createKernelSandbox, type Sandbox } from '../test/support/kernel-sandbox';
import { frame, TCP_ACK, TCP_SYN } from '../test/support/xdp-packets';
import {
  BACKEND_SERVER,
  backendAddr,
  buildXdpTopology,
  CLIENT_SCRIPT,
  installNftDnat,
  NODE_ADDR,
  VIP,
  type XdpTopology,
} from '../test/support/xdp-topology';
import { bpfStatsOn, writeBenchmarkSection } from './report';

const ROOT = join(__dirname, '..', '..');
const OBJECT_DIR = join(ROOT, 'build', 'bpf');
const SEED = 0x5eed;

const { values: args } = parseArgs({
  options: {
    calls: { type: 'string', default: '100000' },
    seconds: { type: 'string', default: '5' },
    conns: { type: 'string', default: '1500' },
    loop: { type: 'string', default: '200000' },
    /** a partial run for development: 'costs' or 'topology' (does not write the results) */
    only: { type: 'string' },
  },
});
const CALLS = Number(args.calls);
const SECONDS = Number(args.seconds);
const CONNS = Number(args.conns);
const LOOP = Number(args.loop);

const RUNS: readonly ['xdp' | 'nft', 'native' | 'generic'][] = [
  ['xdp', 'native'],
  ['xdp', 'generic'],
  ['nft', 'native'],
];
/** Interleaved rounds of the veth-topology runs (median per column). */
const TOPOLOGY_ROUNDS = 5;
/** Interleaved rounds of the in-kernel loops (median). */
const LOOP_ROUNDS = 11;

const BENCH_OBJECT = join(ROOT, 'build', 'bpf-test', 'xdp_bench.bpf.o');
/** Variants of xdp_lb cut short after a stage (test/bpf/progs/xdp_lb_stage_*.bpf.c). */
const STAGES = ['parse', 'choice', 'encap'] as const;
type Stage = (typeof STAGES)[number];
const stageObject = (stage: Stage): string => join(ROOT, 'build', 'bpf-test', `xdp_lb_stage_${stage}.bpf.o`);
/** Connection-table map types measured by a bare insert (test/bpf/progs/xdp_bench.bpf.c). */
const INSERT_FLOORS = [
  ['lru_percpu_lists', 'LRU_HASH, BPF_F_NO_COMMON_LRU (the table before)'],
  ['lru_common', 'LRU_HASH, common LRU'],
  ['lru_percpu_hash', 'LRU_PERCPU_HASH'],
  ['lru_per_cpu_maps', "array of per-CPU LRU_HASH maps (Katran's layout)"],
] as const;
type InsertFloor = (typeof INSERT_FLOORS)[number][0];
const INSERT_MAPS: Record<InsertFloor, string[]> = {
  lru_percpu_lists: ['bench_lru_percpu_lists'],
  lru_common: ['bench_lru_common'],
  lru_percpu_hash: ['bench_lru_percpu_hash'],
  lru_per_cpu_maps: ['bench_lru_cpu0', 'bench_lru_cpu1'],
};
/** Connection-table sizes of the new-flow-against-size table. */
const TABLE_SIZES = [1 << 12, 1 << 16, 1 << 20] as const;
/** Connection-table capacity of the per-packet cost runs. */
const TABLE_CONNS = 1 << 20;

const vipAddress = (i: number): string => `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const median = (values: number[]): number =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** In-kernel loop figures (median of rounds), ns per repetition. */
interface LoopCosts {
  bare: number;
  /** pass-through past the VIP filter (connection-table miss, VIP miss) */
  pass: number;
  /** pass-through the VIP filter answers */
  passFiltered: number;
  /** bench_push_pop: the harness's undo is half of it above bare */
  pushPop: number;
  /** harness figures (xdp_lb_bench / xdp_lb_bench_new) */
  hit: number;
  fresh: number;
  syn: number;
  /** the issue's reference: hash lookup and rewrite; and the same with a direct-mapped array */
  refHash: number;
  refArray: number;
  /** a known flow through the variants cut short after each stage (harness figures) */
  stage: Record<Stage, number>;
}

/** One test-run call per packet, mean ns. */
interface CallCosts {
  bare: number;
  pass: number;
  hit: number;
  fresh: number;
}

interface CostRow {
  vips: number;
  maglevSize: number;
  loop: LoopCosts;
  call: CallCosts;
}

const sleepSync = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

/**
 * Runs a measurement while the kernel's BPF run-time statistics are off. With them on (sysctl
 * kernel.bpf_stats_enabled, or any process holding a BPF_ENABLE_STATS fd) every program run also reads
 * the clock twice and updates per-CPU counters — here about 45 ns more on every path, bare XDP_PASS
 * included, which would flatter every ratio. Waits while they are on, and measures again (`attempt`
 * counts up, so a measurement can use fresh flows) when they came on meanwhile. Bounded.
 */
function withStatsOff<T>(measure: (attempt: number) => T): T {
  const deadline = Date.now() + 120_000;
  for (let attempt = 0; attempt < 4 && Date.now() < deadline; ) {
    if (bpfStatsOn()) {
      sleepSync(200);
      continue;
    }
    const value = measure(attempt++);
    if (!bpfStatsOn()) return value;
  }
  throw new Error(
    `kernel.bpf_stats_enabled stayed on: every figure would include the kernel's run-time accounting`,
  );
}

/** withStatsOff for the topology runs (whole-path figures: only the XDP set-ups run BPF programs). */
async function withStatsOffAsync<T>(measure: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 300_000;
  for (let attempt = 0; attempt < 4 && Date.now() < deadline; ) {
    if (bpfStatsOn()) {
      await new Promise((r) => setTimeout(r, 200));
      continue;
    }
    attempt++;
    const value = await measure();
    if (!bpfStatsOn()) return value;
  }
  throw new Error(
    `kernel.bpf_stats_enabled stayed on: the XDP set-ups would pay the kernel's run-time accounting`,
  );
}

/** Values per name collected over interleaved rounds, and the median of each. */
function rounds(): { add: (name: string, value: number) => void; m: (name: string) => number } {
  const series = new Map<string, number[]>();
  return {
    add: (name, value) => series.set(name, [...(series.get(name) ?? []), value]),
    m: (name) => median(series.get(name) ?? [Number.NaN]),
  };
}

/** The harness's undo (the pop half of push+pop) and what is left of a harness figure without it. */
const undoOf = (c: LoopCosts): number => (c.pushPop - c.bare) / 2;
const own = (c: LoopCosts, harness: number): number => harness - undoOf(c);

/** Mean of the kernel-reported duration over `frames`, one test-run call each. */
function perCall(object: BpfObject, program: string, frames: readonly Buffer[], calls: number): number {
  const prog = object.program(program);
  let total = 0;
  for (let i = 0; i < calls; i++) total += prog.testRun({ data: frames[i % frames.length]! }).durationNs;
  return total / calls;
}

function verdictPackets(lb: XdpLoadBalancer): Record<XdpReasonName, bigint> {
  return Object.fromEntries(Object.entries(lb.stats().verdicts).map(([k, v]) => [k, v.packets])) as Record<
    XdpReasonName,
    bigint
  >;
}

function expectDelta(
  before: Record<XdpReasonName, bigint>,
  after: Record<XdpReasonName, bigint>,
  reason: XdpReasonName,
  count: number,
): void {
  const got = after[reason] - before[reason];
  if (got !== BigInt(count)) throw new Error(`expected ${count} ${reason} verdicts, counted ${got}`);
}

/** In-kernel loop: LOOP repetitions of one packet; checks the verdict (and the counted reason). */
function loopRun(
  lb: XdpLoadBalancer,
  object: BpfObject,
  program: string,
  data: Buffer,
  retval: number,
  reason?: XdpReasonName,
): number {
  const before = reason ? verdictPackets(lb) : undefined;
  const result = object.program(program).testRun({ data, repeat: LOOP });
  if (before && reason) expectDelta(before, verdictPackets(lb), reason, LOOP);
  if (result.retval !== retval)
    throw new Error(`${program}: expected verdict ${retval}, got ${result.retval}`);
  return result.durationNs;
}

function loadLb(pinRoot: string, vips: number, maglevSize: number, maxConns: number): XdpLoadBalancer {
  mkdirSync(pinRoot);
  return XdpLoadBalancer.load(
    bpf,
    OBJECT_DIR,
    { hashSeed: SEED, maglevSize, maxVips: vips + 1, maxConns, encapSource4: NODE_ADDR },
    { pinRoot },
  );
}

/** The reference programs' tables: the flow of `data` rewritten to its own address (the key stays). */
function fillReference(object: BpfObject, data: Buffer): void {
  const key = Buffer.alloc(16);
  data.copy(key, 0, 26, 34); // saddr, daddr
  data.copy(key, 8, 34, 38); // ports
  key.writeUInt32LE(data[23]!, 12); // protocol
  const value = Buffer.alloc(12);
  data.copy(value, 0, 30, 34);
  Buffer.from([2, 0, 0, 0, 0, 9]).copy(value, 4);
  object.map('bench_ref_flows').update(key, value);
  const slot = (data.readUInt32LE(26) ^ data.readUInt32LE(30) ^ data.readUInt16LE(34)) & 0xffff;
  const index = Buffer.alloc(4);
  index.writeUInt32LE(slot >>> 0);
  object.map('bench_ref_slots').update(index, value);
}

/** A TCP packet to port 80 of `dst` from a client derived from `i`. */
const clientFrame = (i: number, dst: string, flags: number, base = 198): Buffer =>
  frame({
    src: `${base}.${51 + ((i >> 16) & 63)}.${(i >> 8) & 255}.${i & 255}`,
    dst,
    protocol: 'tcp',
    sport: 1024 + (i % 60_000),
    dport: 80,
    flags,
  });

async function testRunCosts(sandbox: Sandbox, vips: number, maglevSize: number): Promise<CostRow> {
  // Own pins per configuration: pinned maps of other sizes are not reused (libbpf refuses the mismatch).
  const pinRoot = join(sandbox.bpffsDir, `${vips}-${maglevSize}`);
  const lb = loadLb(pinRoot, vips, maglevSize, TABLE_CONNS);
  const bench = bpf.loadObject(BENCH_OBJECT);
  // The stage variants share the load balancer's pinned maps (same names, same pin directory).
  const stages = Object.fromEntries(
    STAGES.map((stage) => [stage, bpf.loadObject(stageObject(stage), xdpLoadOptions(lb.config, pinRoot))]),
  ) as Record<Stage, BpfObject>;
  try {
    const started = Date.now();
    for (let v = 0; v < vips; v++) {
      lb.setService({
        address: vipAddress(v),
        port: 80,
        protocol: 'tcp',
        backends: [0, 1, 2].map((b) => ({ address: backendAddr(b) })),
      });
    }
    console.log(`  ${vips} VIPs (table size ${maglevSize}) set up in ${Date.now() - started} ms`);

    // Known flows: 1024 flows spread over the VIPs, established by a SYN each (again every round: the
    // new-flow runs insert far more flows than the table holds, which evicts idle ones).
    const known = Array.from({ length: 1024 }, (_, i) => clientFrame(i, vipAddress(i % vips), TCP_ACK));
    const establish = (): void => {
      for (const f of known) {
        const syn = Buffer.from(f);
        syn[14 + 20 + 13] = TCP_SYN; // same tuple, SYN flag (checksum does not matter to the program)
        lb.object.program(XDP_LB_PROGRAM).testRun({ data: syn });
      }
    };
    fillReference(bench, known[0]!);
    // Pass-through, TCP to port 80 of addresses that are no VIP: one whose VIP-filter slot no VIP
    // holds (the filter passes it), and one in the slot of the first VIP (past the filter: a
    // connection-table miss and a VIP miss).
    const vipSlots = new Set(
      Array.from({ length: vips }, (_, v) => vipFilterSlot(ipToBytes16(vipAddress(v)), 80, IPPROTO_TCP)),
    );
    const slotOf = (address: string): number => vipFilterSlot(ipToBytes16(address), 80, IPPROTO_TCP);
    let free = 1;
    while (vipSlots.has(slotOf(`10.200.${free >> 8}.${free & 255}`))) free++;
    const twin = '10.97.0.1';
    if (slotOf(twin) !== slotOf(vipAddress(0)))
      throw new Error(`${twin} is not in the first VIP's filter slot`);
    const passFrame = (dst: string): Buffer =>
      frame({ src: '198.51.100.1', dst, protocol: 'tcp', dport: 80, flags: TCP_ACK });
    const pass = passFrame(twin);
    const filtered = passFrame(`10.200.${free >> 8}.${free & 255}`);
    // New flows per call: a distinct tuple each (no SYN flag: the table miss is what makes them new).
    let freshIndex = 0;
    const freshFrames = (count: number): Buffer[] =>
      Array.from({ length: count }, () => {
        const i = freshIndex++;
        return clientFrame(i, vipAddress(i % vips), TCP_ACK, 100);
      });
    // New flows in the loop: the harness bumps the client address every repetition, from a base of
    // its own per round so no round meets another's flows.
    const newFlowBase = (round: number, flags: number, attempt: number): Buffer =>
      frame({
        src: `${(round + 1) * 16 + (flags === TCP_SYN ? 8 : 0) + attempt}.0.0.1`,
        dst: vipAddress(0),
        protocol: 'tcp',
        sport: 5555,
        dport: 80,
        flags,
      });

    // Many short in-kernel rounds (other work on the machine comes and goes), fewer per-call rounds.
    const ROUNDS = LOOP_ROUNDS;
    const CALL_ROUNDS = 5;
    const per = Math.ceil(CALLS / CALL_ROUNDS);
    const call: CallCosts = { bare: 0, pass: 0, hit: 0, fresh: 0 };
    const { add, m } = rounds();
    const { pass: PASS, tx: TX } = XdpAction;
    for (let r = 0; r < ROUNDS; r++) {
      establish();
      const o = lb.object;
      add(
        'bare',
        withStatsOff(() => loopRun(lb, o, XDP_PASS_PROGRAM, known[0]!, PASS)),
      );
      add(
        'pass',
        withStatsOff(() => loopRun(lb, o, XDP_LB_BENCH_PROGRAM, pass, PASS, 'pass_not_vip')),
      );
      add(
        'passFiltered',
        withStatsOff(() => loopRun(lb, o, XDP_LB_BENCH_PROGRAM, filtered, PASS, 'pass_not_vip')),
      );
      add(
        'hit',
        withStatsOff(() => loopRun(lb, o, XDP_LB_BENCH_PROGRAM, known[0]!, TX, 'tx_conn_hit')),
      );
      add(
        'pushPop',
        withStatsOff(() => loopRun(lb, bench, 'bench_push_pop', known[0]!, TX)),
      );
      add(
        'refHash',
        withStatsOff(() => loopRun(lb, bench, 'bench_ref_hash', known[0]!, TX)),
      );
      add(
        'refArray',
        withStatsOff(() => loopRun(lb, bench, 'bench_ref_array', known[0]!, TX)),
      );
      for (const stage of STAGES) {
        const verdict = stage === 'encap' ? TX : PASS;
        add(
          stage,
          withStatsOff(() => loopRun(lb, stages[stage], XDP_LB_BENCH_PROGRAM, known[0]!, verdict)),
        );
      }
      for (const [name, flags] of [
        ['fresh', TCP_ACK],
        ['syn', TCP_SYN],
      ] as const) {
        const measure = (attempt: number): number =>
          loopRun(lb, o, XDP_LB_BENCH_NEW_PROGRAM, newFlowBase(r, flags, attempt), TX, 'tx_new_flow');
        add(name, withStatsOff(measure));
      }

      if (r >= CALL_ROUNDS) continue;
      const perCallRound = withStatsOff((): CallCosts => {
        establish();
        const bare = perCall(o, XDP_PASS_PROGRAM, known, per);
        let before = verdictPackets(lb);
        const passCost = perCall(o, XDP_LB_PROGRAM, [pass], per);
        expectDelta(before, verdictPackets(lb), 'pass_not_vip', per);
        before = verdictPackets(lb);
        const hit = perCall(o, XDP_LB_PROGRAM, known, per);
        expectDelta(before, verdictPackets(lb), 'tx_conn_hit', per);
        const frames = freshFrames(per);
        before = verdictPackets(lb);
        const fresh = perCall(o, XDP_LB_PROGRAM, frames, per);
        expectDelta(before, verdictPackets(lb), 'tx_new_flow', per);
        return { bare, pass: passCost, hit, fresh };
      });
      for (const key of ['bare', 'pass', 'hit', 'fresh'] as const)
        call[key] += perCallRound[key] / CALL_ROUNDS;
    }
    return {
      vips,
      maglevSize,
      loop: {
        bare: m('bare'),
        pass: m('pass'),
        passFiltered: m('passFiltered'),
        pushPop: m('pushPop'),
        hit: m('hit'),
        fresh: m('fresh'),
        syn: m('syn'),
        refHash: m('refHash'),
        refArray: m('refArray'),
        stage: { parse: m('parse'), choice: m('choice'), encap: m('encap') },
      },
      call,
    };
  } finally {
    for (const object of Object.values(stages)) object.close();
    bench.close();
    lb.close();
  }
}

interface LiveFrames {
  repetitions: number;
  /** repetitions that found the frame's bytes as given (the rest saw an earlier repetition's writes) */
  fresh: number;
  /** bare XDP_DROP per repetition: live frames, and the plain test run */
  dropLive: number;
  dropPlain: number;
}

/**
 * What BPF_F_TEST_XDP_LIVE_FRAMES would give the cost runs: bench_live_probe counts the repetitions
 * that still see the caller's bytes (it overwrites them), and a bare XDP_DROP shows the live mode's own
 * cost. Only XDP_DROP: nothing is passed or transmitted (no ctx: the frames are "received" on this
 * netns's loopback device and dropped).
 */
function liveFramesCheck(): LiveFrames {
  const bench = bpf.loadObject(BENCH_OBJECT);
  try {
    const data = clientFrame(0, vipAddress(0), TCP_ACK);
    data[0] = 0xaa;
    const repetitions = 100_000;
    const flags = TestRunFlags.xdpLiveFrames;
    bench.program('bench_live_probe').testRun({ data, repeat: repetitions, flags });
    const bss = bench.map('.bss').lookup(Buffer.alloc(4))!;
    const fresh = Number(bss.readBigUInt64LE(8));
    if (Number(bss.readBigUInt64LE(16)) !== repetitions)
      throw new Error('bench_live_probe: runs not counted');
    const { add, m } = rounds();
    for (let r = 0; r < LOOP_ROUNDS; r++) {
      const drop = bench.program('bench_drop');
      add(
        'live',
        withStatsOff(() => drop.testRun({ data, repeat: LOOP, flags }).durationNs),
      );
      add(
        'plain',
        withStatsOff(() => drop.testRun({ data, repeat: LOOP }).durationNs),
      );
    }
    return { repetitions, fresh, dropLive: m('live'), dropPlain: m('plain') };
  } finally {
    bench.close();
  }
}

interface InsertRow {
  size: number;
  bare: number;
  pushPop: number;
  /** xdp_lb_bench_new (non-SYN new flow), harness figure */
  lbFresh: number;
  /** bare bpf_map_update_elem of a new key, per map type */
  floors: Record<InsertFloor, number>;
}

/**
 * New flows against the connection-table size: the load balancer's new flow and, as floors, one bare
 * bpf_map_update_elem of a never-seen key into each kernel map type the issue names, same size,
 * interleaved. Each configuration inserts 5 × LOOP flows, more than the smaller tables hold.
 */
function insertCosts(sandbox: Sandbox, size: number): InsertRow {
  const pinRoot = join(sandbox.bpffsDir, `insert-${size}`);
  const lb = loadLb(pinRoot, 1, 1021, size);
  const mapMaxEntries: Record<string, number> = {};
  for (const [kind, maps] of Object.entries(INSERT_MAPS)) {
    for (const map of maps) mapMaxEntries[map] = kind === 'lru_per_cpu_maps' ? size / 2 : size;
  }
  const bench = bpf.loadObject(BENCH_OBJECT, { mapMaxEntries });
  try {
    lb.setService({
      address: vipAddress(0),
      port: 80,
      protocol: 'tcp',
      backends: [0, 1, 2].map((b) => ({ address: backendAddr(b) })),
    });
    const data = clientFrame(0, vipAddress(0), TCP_ACK);
    const { add, m } = rounds();
    for (let r = 0; r < LOOP_ROUNDS; r++) {
      add(
        'bare',
        withStatsOff(() => loopRun(lb, lb.object, XDP_PASS_PROGRAM, data, XdpAction.pass)),
      );
      add(
        'pushPop',
        withStatsOff(() => loopRun(lb, bench, 'bench_push_pop', data, XdpAction.tx)),
      );
      const base = (attempt: number): Buffer =>
        frame({
          src: `${(r + 1) * 16 + attempt}.0.0.1`,
          dst: vipAddress(0),
          protocol: 'tcp',
          dport: 80,
          flags: TCP_ACK,
        });
      const fresh = (attempt: number): number =>
        loopRun(lb, lb.object, XDP_LB_BENCH_NEW_PROGRAM, base(attempt), XdpAction.tx, 'tx_new_flow');
      add('lbFresh', withStatsOff(fresh));
      for (const [kind] of INSERT_FLOORS) {
        add(
          kind,
          withStatsOff(() => loopRun(lb, bench, `bench_insert_${kind}`, data, XdpAction.pass)),
        );
      }
    }
    return {
      size,
      bare: m('bare'),
      pushPop: m('pushPop'),
      lbFresh: m('lbFresh'),
      floors: Object.fromEntries(INSERT_FLOORS.map(([kind]) => [kind, m(kind)])) as Record<
        InsertFloor,
        number
      >,
    };
  } finally {
    bench.close();
    lb.close();
  }
}

function collect(child: import('node:child_process').ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`still running after ${timeoutMs} ms`));
    }, timeoutMs);
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.on('exit', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

interface PathRow {
  mode: 'xdp' | 'nft';
  /** XDP attach mode asked for on every veth of the path */
  attach?: 'native' | 'generic';
  pps: number;
  sent: number;
  lostPct: number;
  connsPerSec: number;
  failed: number;
  xdpMode?: string;
}

async function topologyRun(mode: 'xdp' | 'nft', attach: 'native' | 'generic' = 'native'): Promise<PathRow> {
  const sandbox = createKernelSandbox(`xdp-${mode}`, String(process.pid));
  const links: XdpLink[] = [];
  let lb: XdpLoadBalancer | undefined;
  try {
    const topo: XdpTopology = buildXdpTopology(sandbox, 3, mode);
    let xdpMode: string | undefined;
    if (mode === 'xdp') {
      lb = XdpLoadBalancer.load(
        bpf,
        OBJECT_DIR,
        { hashSeed: SEED, maxVips: 4, encapSource4: NODE_ADDR },
        { pinRoot: sandbox.bpffsDir },
      );
      for (const protocol of ['tcp', 'udp'] as const) {
        lb.setService({ address: VIP, port: 5201, protocol, backends: [{ address: backendAddr(0) }] });
      }
      lb.setService({
        address: VIP,
        port: 80,
        protocol: 'tcp',
        backends: [0, 1, 2].map((i) => ({ address: backendAddr(i) })),
      });
      // The backends' decapsulation stands in for the ipip device a real backend has, which works on
      // the skb path: generic XDP in every set-up, so only the node's mode differs between them.
      topo.backends.forEach((backend, i) => {
        links.push(
          lb!.object
            .program(XDP_DECAP_PROGRAM)
            .attachXdp(backend.ifindex(topo.backendLinks[i]!), 'generic', { netns: backend.name }),
        );
      });
      // Native XDP_TX on a veth delivers only when the peer has an XDP program too; generic XDP_TX is an
      // ordinary transmit and needs none.
      if (attach === 'native') {
        links.push(
          lb.object
            .program(XDP_PASS_PROGRAM)
            .attachXdp(topo.router.ifindex(topo.routerNodePort), 'native', { netns: topo.router.name }),
        );
      }
      const link = lb.attach(topo.node.ifindex(topo.nodeLink), { netns: topo.node.name, mode: attach });
      links.push(link);
      xdpMode = link.mode;
    } else {
      installNftDnat(topo, [
        { port: 5201, protocols: ['tcp', 'udp'], weights: [1, 0, 0] },
        { port: 80, protocols: ['tcp'], weights: [1, 1, 1] },
      ]);
    }
    // Servers: iperf3 on backend 0, the echo server on every backend (any address: VIP or own).
    // In DSR mode the server binds the VIP, so its UDP replies leave from the VIP (a wildcard UDP socket
    // would answer from the backend's own address, which the client's connected socket ignores).
    sandbox.spawn(['iperf3', '-s', '-1', '-p', '5201', ...(mode === 'xdp' ? ['-B', VIP] : [])], {
      netns: topo.backends[0],
    });
    for (const [i, backend] of topo.backends.entries()) {
      const server = sandbox.spawn([process.execPath, '-e', BACKEND_SERVER, `backend${i}`, '0.0.0.0', '80'], {
        netns: backend,
      });
      await firstLine(server, 10_000);
    }
    await new Promise((r) => setTimeout(r, 300));

    const iperf = sandbox.spawn(
      ['iperf3', '-c', VIP, '-p', '5201', '-u', '-b', '0', '-l', '64', '-t', String(SECONDS), '-J'],
      { netns: topo.client },
    );
    const report = JSON.parse(await collect(iperf, (SECONDS + 20) * 1000)) as {
      error?: string;
      end?: { sum?: { packets: number; lost_packets: number; seconds: number } };
    };
    if (report.error || !report.end?.sum)
      throw new Error(`iperf3 (${mode}): ${report.error ?? 'no summary'}`);
    const { packets, lost_packets: lost, seconds } = report.end.sum;

    const clients = [0, 1].map((c) =>
      sandbox.spawn(
        [process.execPath, '-e', CLIENT_SCRIPT, VIP, '80', String(CONNS), String(20_000 + c * 20_000), '100'],
        { netns: topo.client },
      ),
    );
    const t0 = process.hrtime.bigint();
    const results = await Promise.all(clients.map((c) => firstLine(c, 120_000)));
    const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    const conns = results.flatMap((line) => JSON.parse(line) as { ok: boolean }[]);
    return {
      mode,
      attach: mode === 'xdp' ? attach : undefined,
      pps: (packets - lost) / seconds,
      sent: packets / seconds,
      lostPct: packets ? (100 * lost) / packets : 0,
      connsPerSec: conns.filter((c) => c.ok).length / elapsed,
      failed: conns.filter((c) => !c.ok).length,
      xdpMode,
    };
  } finally {
    for (const link of links) link.close();
    lb?.close();
    await sandbox.cleanup();
  }
}

const fmt = (n: number, digits = 0): string =>
  n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** Median of each numeric column over the rounds of one path. */
function medianRow(rows: PathRow[]): PathRow & { ppsRange: [number, number] } {
  const col = (pick: (r: PathRow) => number): number => median(rows.map(pick));
  const pps = rows.map((r) => r.pps);
  return {
    ...rows[0]!,
    pps: col((r) => r.pps),
    sent: col((r) => r.sent),
    lostPct: col((r) => r.lostPct),
    connsPerSec: col((r) => r.connsPerSec),
    failed: rows.reduce((sum, r) => sum + r.failed, 0),
    ppsRange: [Math.min(...pps), Math.max(...pps)],
  };
}

async function main(): Promise<void> {
  const sandbox = createKernelSandbox('xdp-cost', String(process.pid));
  const costs: CostRow[] = [];
  const inserts: InsertRow[] = [];
  let live: LiveFrames | undefined;
  if (args.only === 'topology') {
    await sandbox.cleanup();
    for (const [mode, attach] of RUNS) console.log(await topologyRun(mode, attach));
    return;
  }
  try {
    console.log('test-run costs');
    costs.push(await testRunCosts(sandbox, 1, 65_537));
    costs.push(await testRunCosts(sandbox, 1, 1021));
    costs.push(await testRunCosts(sandbox, 10_000, 1021));
    for (const size of TABLE_SIZES) inserts.push(insertCosts(sandbox, size));
    live = liveFramesCheck();
  } finally {
    await sandbox.cleanup();
  }
  for (const c of costs) console.log(JSON.stringify(c));
  for (const i of inserts) console.log(JSON.stringify(i));
  console.log(JSON.stringify(live));
  if (args.only === 'costs') return;

  console.log('veth topology');
  const byPath = new Map<string, PathRow[]>();
  for (let round = 0; round < TOPOLOGY_ROUNDS; round++) {
    for (const [mode, attach] of RUNS) {
      const row = await withStatsOffAsync(() => topologyRun(mode, attach));
      console.log(JSON.stringify(row));
      const key = `${mode}-${attach}`;
      byPath.set(key, [...(byPath.get(key) ?? []), row]);
    }
  }
  const paths = [...byPath.values()].map(medianRow);
  // Paired per round: each XDP set-up against the nftables run of the same round (slow drifts of the
  // machine's load cancel out).
  const nftRounds = byPath.get('nft-native') ?? [];
  const paired = (key: string, pick: (r: PathRow) => number): string => {
    const ratios = (byPath.get(key) ?? []).map((row, i) => pick(row) / pick(nftRounds[i]!));
    return `${fmt(median(ratios), 2)}× (${fmt(Math.min(...ratios), 2)}–${fmt(Math.max(...ratios), 2)})`;
  };

  const kernel = release();
  const x = (value: number, bare: number): string => `${fmt(value / bare, 2)}×`;
  const lines = [
    '## XDP load balancer (bench/xdp.ts)',
    '',
    `Run ${new Date().toISOString()}, kernel ${kernel}, ${cpus().length} CPUs shared with other work, node ${process.version}. Compare within a table: one run, interleaved.`,
    '',
    `### Per-packet cost through BPF_PROG_TEST_RUN`,
    '',
    `In-kernel loop: the median of ${LOOP_ROUNDS} interleaved rounds of ${fmt(LOOP)} repetitions each (hot caches, one flow per path), everything in one table measured in the same rounds. The kernel's XDP test run does not restore the packet between repetitions (nor does \`BPF_F_TEST_XDP_LIVE_FRAMES\`: it resets the frame's pointers, not its bytes, and then transmits or passes every frame for real), so the paths that encapsulate run through \`xdp_lb_bench\`: the same load-balancer code, then one \`bpf_xdp_adjust_head\` and the saved Ethernet header copied back. \`bench_push_pop\` does that pop together with its mirror image, a push (the same helper call and copy, opposite sign); half of push+pop above bare is the undo, and "own" = harness − (push+pop − bare) / 2. New flow (ACK): \`xdp_lb_bench_new\`, which also bumps the client address after each repetition, so every repetition is a flow never seen before (a connection-table miss, the Maglev choice, an insert into a table of 2^20 flows that the runs overfill, so inserts evict). New flow (SYN): the same with the SYN flag (no lookup, Maglev choice, insert). Pass-through: TCP to port 80 of an address that is no VIP, in a VIP-filter slot no VIP holds (filtered: the usual case) and in the first VIP's slot (past the filter: a connection-table miss, then a VIP miss). Reference: the issue's minimal hash-lookup-and-rewrite program (\`bench_ref_hash\`: parse, 5-tuple lookup in a kernel hash map, destination and MACs rewritten with an incremental checksum, XDP_TX) and the same with a direct-mapped array (\`bench_ref_array\`). The verdict counters are checked: every repetition took the path named.`,
    '',
    '| VIPs | table size | bare XDP_PASS ns | pass-through ns: filtered / past the filter | push+pop ns | known flow ns: harness / own | new flow (ACK) ns: own | new flow (SYN) ns: own | hit / bare | new (ACK) / bare | new (SYN) / bare | reference hash / array: ns (× bare) |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...costs.map(({ vips, maglevSize, loop: c }) => {
      const hit = own(c, c.hit);
      const fresh = own(c, c.fresh);
      const syn = own(c, c.syn);
      return `| ${fmt(vips)} | ${fmt(maglevSize)} | ${c.bare} | ${c.passFiltered} / ${c.pass} | ${c.pushPop} | ${c.hit} / ${fmt(hit)} | ${fmt(fresh)} | ${fmt(syn)} | **${x(hit, c.bare)}** | **${x(fresh, c.bare)}** | ${x(syn, c.bare)} | ${c.refHash} (${x(c.refHash, c.bare)}) / ${c.refArray} (${x(c.refArray, c.bare)}) |`;
    }),
    '',
    `Why not \`BPF_F_TEST_XDP_LIVE_FRAMES\` (the addon's \`testRun\` takes \`flags\`): in that mode ${fmt(live!.fresh)} of ${fmt(live!.repetitions)} repetitions of \`bench_live_probe\` found the frame as given — one per page of the test run's page pool; the rest saw an earlier repetition's writes, so an encapsulating program needs the same undo — and a bare XDP_DROP costs ${live!.dropLive} ns per repetition there against ${live!.dropPlain} ns in the plain test run (page-pool recycling per frame; an XDP_TX would also really transmit). \`cpu\` (\`BPF_F_TEST_RUN_ON_CPU\`) is refused for XDP programs (EINVAL).`,
    '',
    "Where a known flow's time goes: the same rounds, variants of the program compiled to stop after each stage (`test/bpf/progs/xdp_lb_stage_*.bpf.c`), in ns above bare XDP_PASS (the encapsulating ones with the undo removed as above).",
    '',
    '| VIPs | table size | parse + VIP filter | + connection table, owner check, backend | + outer header, bpf_xdp_adjust_head, L2 | + counters (the full program) | helper floor: one bpf_xdp_adjust_head + 14-byte copy |',
    '|---:|---:|---:|---:|---:|---:|---:|',
    ...costs.map(({ vips, maglevSize, loop: c }) => {
      const parse = c.stage.parse - c.bare;
      const choice = c.stage.choice - c.stage.parse;
      const encap = own(c, c.stage.encap) - c.stage.choice;
      const counters = c.hit - c.stage.encap;
      return `| ${fmt(vips)} | ${fmt(maglevSize)} | ${fmt(parse)} | ${fmt(choice)} | ${fmt(encap)} | ${fmt(counters)} | ${fmt(undoOf(c))} |`;
    }),
    '',
    `One test-run call per packet (repeat 1, ${fmt(CALLS)} calls per path and configuration, kernel-reported durations averaged; \`xdp_lb\` itself, no harness). Each call starts from a fresh packet buffer with caches disturbed by the syscall and the JavaScript around it, and includes the test-run timer's two clock reads — the cold-cache view. Pass-through: the address past the VIP filter. Known flows: 1024 flows spread over the VIPs; new flows: a distinct 5-tuple per call spread over the VIPs.`,
    '',
    '| VIPs | table size | bare XDP_PASS ns | pass-through ns | known flow (table hit) ns | new flow (Maglev) ns | hit / bare | new / bare |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...costs.map(
      ({ vips, maglevSize, call: c }) =>
        `| ${fmt(vips)} | ${fmt(maglevSize)} | ${fmt(c.bare, 1)} | ${fmt(c.pass, 1)} | ${fmt(c.hit, 1)} | ${fmt(c.fresh, 1)} | ${x(c.hit, c.bare)} | ${x(c.fresh, c.bare)} |`,
    ),
    '',
    `New flows against the connection-table size (1 VIP, in-kernel loop, median of ${LOOP_ROUNDS} interleaved rounds, ${LOOP_ROUNDS} × ${fmt(LOOP)} new flows per size). The load balancer's new flow (ACK, own) next to the floor of the kernel's map types: one bare \`bpf_map_update_elem\` of a never-seen 40-byte flow key into each, same total size, nothing else in the program (ns above bare).`,
    '',
    `| flows | bare ns | sluice new flow: own ns (× bare) | ${INSERT_FLOORS.map(([, label]) => `${label}: insert ns above bare`).join(' | ')} |`,
    `|---:|---:|---:|${INSERT_FLOORS.map(() => '---:').join('|')}|`,
    ...inserts.map((i) => {
      const fresh = i.lbFresh - (i.pushPop - i.bare) / 2;
      return `| ${fmt(i.size)} | ${i.bare} | ${fmt(fresh)} (${x(fresh, i.bare)}) | ${INSERT_FLOORS.map(([kind]) => fmt(i.floors[kind] - i.bare)).join(' | ')} |`;
    }),
    '',
    'Targets: table hit under 2.5× bare XDP_PASS, new flow under 4×, flat from 1 to 10 000 VIPs.',
    '',
    '### Through the veth topology (client → router → node → backends)',
    '',
    `UDP: iperf3, 64-byte datagrams, unlimited rate, ${SECONDS} s, one backend; packets/s counted at the backend. TCP: two clients, ${fmt(CONNS)} sequential connections each (connect, 100 bytes echoed, close), three backends. ${TOPOLOGY_ROUNDS} rounds, the three set-ups interleaved in each; median per column (UDP range in brackets), and each XDP set-up's ratio to the nftables run of the same round. The backends' decapsulation (standing in for the ipip device a real backend has, which works on the skb path) is generic XDP in both XDP set-ups, so only the node's mode differs; native mode also puts \`xdp_pass\` on the router's port, without which a veth drops native XDP_TX frames. XDP: the program on the node's veth (native: veth's XDP path; generic: the skb path), encapsulation to the backends, direct server return. nftables: DNAT on the node with a numgen verdict map, replies back through the node. IPVS: not in this kernel (no CONFIG_IP_VS), not measured. Everything — client, router, node, backends — shares the same ${cpus().length} CPUs, so these are whole-path figures.`,
    '',
    '| load balancer | UDP packets/s received (min–max) | sent/s | lost | TCP connections/s | failed | UDP packets/s ÷ nftables, same round: median (min–max) | TCP connections/s ÷ nftables, same round |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...paths.map((p) => {
      const key = `${p.mode}-${p.attach ?? 'native'}`;
      const ratios =
        p.mode === 'xdp' ? `${paired(key, (r) => r.pps)} | ${paired(key, (r) => r.connsPerSec)}` : '— | —';
      return `| ${p.mode === 'xdp' ? `XDP (sluice), ${p.xdpMode} mode` : 'nftables DNAT'} | ${fmt(p.pps)} (${fmt(p.ppsRange[0])}–${fmt(p.ppsRange[1])}) | ${fmt(p.sent)} | ${fmt(p.lostPct, 1)}% | ${fmt(p.connsPerSec)} | ${p.failed} | ${ratios} |`;
    }),
    '',
  ];
  const section = lines.join('\n');
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench', 'results', 'xdp.md'), `${section}\n`);
  writeBenchmarkSection('xdp', section);
  console.log(section);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
