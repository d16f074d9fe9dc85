/**
 * Same-node fast path benchmark: ping-pong latency (p50/p99), one-way bulk throughput and short-connection
 * rate at 64 B, 1 KiB, 64 KiB and 1 MiB: the fast path (default policy, and redirecting every send), the
 * issue's minimal redirect (the floor for the fast path's own cost, in a sibling cgroup) and plain
 * loopback, interleaved in one run, several rounds, with both ends pinned to one core and to two; plus
 * what a receiver that stops reading lets the kernel absorb.
 *
 * Everything runs in throwaway netns + cgroups (test/support/kernel-sandbox.ts) with the C helper
 * build/fastpath-io in non-blocking mode (the only sockets the fast path takes). Bounded: fixed
 * iteration counts and a per-run timeout. Results: bench/results/fastpath.md and docs/benchmarks.md
 * between the fastpath markers.
 *
 * Run: make build && node dist/bench/fastpath.js   (ROUNDS=7 for more rounds; default 3)
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { resolve } from 'node:path';
import { FastPath } from '../agent/fastpath/fastpath';
import { parseFastPathSettings } from '../agent/fastpath/settings';
import { bpf, packageRoot } from '../native';
import { fastpathIoAvailable, runFastpathIo, type Spawner } from '../test/support/fastpath-io';
import { createKernelSandbox, type Netns } from '../test/support/kernel-sandbox';
import { assertBpfStatsStayedOff, waitForBpfStatsOff, writeBenchmarkSection } from './report';

const ROOT = packageRoot(__dirname);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const SIZES = [64, 1024, 65536, 1024 * 1024];
const KiB = 1024;
const MiB = 1024 * 1024;

/** Iterations / bytes per size, picked so one measurement takes well under a second here. */
const PINGPONG_ITERS: Record<number, number> = { 64: 20000, 1024: 20000, 65536: 4000, 1048576: 300 };
const BULK_BYTES: Record<number, number> = {
  64: 16 * MiB,
  1024: 128 * MiB,
  65536: 512 * MiB,
  1048576: 512 * MiB,
};
const CONN_COUNT: Record<number, number> = { 64: 2000, 1024: 2000, 65536: 1000, 1048576: 200 };

/**
 * fast: the fast path with its default policy; raw: the fast path redirecting every send (no streaming
 * policy); min: the minimal redirect of issue 4 (build/bpf-test/fastpath_min.bpf.o: sockhash + redirect,
 * nothing else), the ceiling for the fast path's own per-message cost; plain: loopback TCP.
 */
type Mode = 'fast' | 'raw' | 'min' | 'plain';
const MODES: Mode[] = ['fast', 'raw', 'min', 'plain'];
/** The minimal redirect has no backpressure bound: the stalled-receiver run would absorb its whole cap. */
const STALL_MODES: Mode[] = ['fast', 'raw', 'plain'];
const MIN_OBJECT = resolve(ROOT, 'build/bpf-test/fastpath_min.bpf.o');
interface Sample {
  p50: number;
  p99: number;
  mbps: number;
  cps: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function sizeLabel(size: number): string {
  return size >= MiB ? `${size / MiB} MiB` : size >= KiB ? `${size / KiB} KiB` : `${size} B`;
}

/**
 * Where the two ends run. Left to the scheduler, a run lands on one core or on two and stays there, and
 * ping-pong latency differs about 2.5x between the two (a wake-up across cores), so medians mixed the two
 * at random; each placement is pinned and reported on its own (fastpath-io -c).
 */
interface Placement {
  readonly label: string;
  readonly cpus: readonly [number, number];
}
const PLACEMENTS: readonly Placement[] =
  cpus().length >= 2
    ? [
        { label: 'one core', cpus: [0, 0] },
        { label: 'two cores', cpus: [0, 1] },
      ]
    : [{ label: 'one core', cpus: [0, 0] }];

async function measure(sandbox: Spawner, ns: Netns, size: number, placement: Placement): Promise<Sample> {
  const opts = { nonblocking: true, timeoutMs: 120_000, cpus: placement.cpus };
  const pp = await runFastpathIo(sandbox, ns, ['pingpong', size, PINGPONG_ITERS[size]!], opts);
  const bulk = await runFastpathIo(sandbox, ns, ['bulk', size, BULK_BYTES[size]!], opts);
  const conn = await runFastpathIo(sandbox, ns, ['connrate', size, CONN_COUNT[size]!], opts);
  for (const r of [pp, bulk, conn]) if (!r.ok) throw new Error(`fastpath-io failed: ${JSON.stringify(r)}`);
  return {
    p50: pp.p50us as number,
    p99: pp.p99us as number,
    mbps: bulk.MBps as number,
    cps: conn.perSecond as number,
  };
}

async function main(): Promise<void> {
  const missing = fastpathIoAvailable();
  if (missing) throw new Error(missing);
  if (!existsSync(MIN_OBJECT)) throw new Error(`${MIN_OBJECT} not built (make bpf-test)`);
  await waitForBpfStatsOff();
  const sandbox = createKernelSandbox('bench-fastpath', String(process.pid));
  // A sibling cgroup for the minimal redirect, so its sockets never meet the fast path's programs.
  const minSandbox = createKernelSandbox('bench-fastpath-min', String(process.pid));
  const ns = sandbox.netns();
  const started = new Date();
  const minObject = bpf.loadObject(MIN_OBJECT);
  const minLinks = [
    minObject.program('fp_min_msg').attachSockmap(minObject.map('fp_min_socks')),
    minObject.program('fp_min_sockops').attachCgroup(minSandbox.cgroupPath),
  ];
  try {
    const policy = parseFastPathSettings({ enabled: true, scope: 'all' });
    const raw = parseFastPathSettings({
      enabled: true,
      scope: 'all',
      maxStreakMessages: 0,
      maxStreakBytes: 0,
    });
    const off = parseFastPathSettings({ enabled: false, scope: 'all' });
    const apply = (mode: Mode): Spawner => {
      fp.configure(mode === 'fast' ? policy : mode === 'raw' ? raw : off);
      return mode === 'min' ? minSandbox : sandbox;
    };
    const fp = new FastPath({
      bpf,
      settings: policy,
      cgroupPath: sandbox.cgroupPath,
      pinRoot: `${sandbox.bpffsDir}/fp`,
    });
    fp.start();
    try {
      const samples = new Map<string, Sample[]>();
      const key = (mode: Mode, size: number, placement: Placement) => `${mode}:${size}:${placement.label}`;
      for (let round = 0; round < ROUNDS; round++) {
        for (const placement of PLACEMENTS) {
          for (const size of SIZES) {
            // Rotate which mode goes first so drift on a shared machine hits all alike.
            const shift = (round + SIZES.indexOf(size)) % MODES.length;
            const order = [...MODES.slice(shift), ...MODES.slice(0, shift)];
            for (const mode of order) {
              const sample = await measure(apply(mode), ns, size, placement);
              const k = key(mode, size, placement);
              samples.set(k, [...(samples.get(k) ?? []), sample]);
              console.error(
                `round ${round + 1}/${ROUNDS} ${placement.label} ${mode} ${sizeLabel(size)}: ${JSON.stringify(sample)}`,
              );
            }
          }
        }
      }
      // Stalled receiver: bytes a sender can queue before it is pushed back (raw: the bound alone).
      const stall: Record<Mode, number[]> = { fast: [], raw: [], min: [], plain: [] };
      for (let round = 0; round < ROUNDS; round++) {
        for (const mode of STALL_MODES) {
          const r = await runFastpathIo(apply(mode), ns, ['stall', 256 * MiB], { nonblocking: true });
          if (!r.ok) throw new Error(`stall failed: ${JSON.stringify(r)}`);
          stall[mode].push(r.queued as number);
        }
      }
      const counters = fp.counters();

      const agg = (mode: Mode, size: number, placement: Placement, f: (s: Sample) => number) =>
        median((samples.get(key(mode, size, placement)) ?? []).map(f));
      const rows: string[] = [];
      const pct = (a: number, b: number) => `${a >= b ? '+' : ''}${(((a - b) / b) * 100).toFixed(0)}%`;
      const cell = (size: number, placement: Placement, f: (s: Sample) => number, digits: number) => {
        const [a, r, m, p] = MODES.map((mode) => agg(mode, size, placement, f));
        return (
          `**${a!.toFixed(digits)}** (${pct(a!, p!)}) / ${r!.toFixed(digits)} (${pct(r!, p!)}) / ` +
          `${m!.toFixed(digits)} (${pct(m!, p!)}) / ${p!.toFixed(digits)}`
        );
      };
      for (const placement of PLACEMENTS) {
        for (const size of SIZES) {
          rows.push(
            `| ${placement.label} | ${sizeLabel(size)} | ${cell(size, placement, (s) => s.p50, 1)} | ` +
              `${cell(size, placement, (s) => s.p99, 1)} | ${cell(size, placement, (s) => s.mbps, 0)} | ` +
              `${cell(size, placement, (s) => s.cps, 0)} |`,
          );
        }
      }
      const stallFast = median(stall.fast);
      const stallRaw = median(stall.raw);
      const stallPlain = median(stall.plain);
      const body = [
        `### Same-node fast path (sockops + sk_msg redirect) vs plain loopback`,
        '',
        `Run ${started.toISOString()}, kernel ${readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}, ` +
          `${ROUNDS} rounds (median of rounds), fast path, minimal redirect and plain loopback interleaved in one run, ` +
          `non-blocking sockets (the only ones the fast path takes), 2 shared cores: compare within a row.`,
        '',
        'Each cell: **fast path with its default policy** (change vs plain) / the fast path redirecting every send, ' +
          'no streaming policy (change vs plain) / minimal redirect, nothing but sockhash + `bpf_msg_redirect_hash` ' +
          '(`test/bpf/progs/fastpath_min.bpf.c`, no bound, no ordering state: the ceiling, not shippable) ' +
          '(change vs plain) / plain loopback.',
        '',
        'Placement: both ends pinned to one core (`-c 0,0`) or client and server on two cores (`-c 0,1`); ' +
          'left to the scheduler a run lands on either and latency differs about 2.5× between them.',
        '',
        '| placement | message | ping-pong p50 µs | ping-pong p99 µs | one-way bulk MB/s | short connections/s |',
        '|---|---|---|---|---|---|',
        ...rows,
        '',
        `Stalled receiver (bytes a sender could queue before being pushed back for 300 ms, median): ` +
          `fast path ${(stallFast / MiB).toFixed(1)} MiB (${(stallFast / stallPlain).toFixed(2)}×), ` +
          `redirect every send with only the 4 MiB backpressure bound ${(stallRaw / MiB).toFixed(1)} MiB ` +
          `(${(stallRaw / stallPlain).toFixed(2)}×), plain loopback ${(stallPlain / MiB).toFixed(1)} MiB; target ≤ 4×. ` +
          `Without a bound this kernel absorbed 1 GiB for one connection (issue 4).`,
        '',
        `Counters over the run: redirected ${counters.redirectedMsgs} msgs / ${counters.redirectedBytes} B, ` +
          `fallback ${counters.fallbackMsgs} msgs (backpressure ${counters.fallbackBackpressure} connections), ` +
          `insert failures ${counters.insertFailures}.`,
      ].join('\n');
      assertBpfStatsStayedOff();
      mkdirSync(resolve(ROOT, 'bench/results'), { recursive: true });
      writeFileSync(resolve(ROOT, 'bench/results/fastpath.md'), `${body}\n`);
      writeBenchmarkSection('fastpath', body);
      console.log(body);
    } finally {
      fp.stop();
    }
  } finally {
    for (const link of minLinks) {
      link.detach();
      link.close();
    }
    minObject.close();
    await minSandbox.cleanup();
    await sandbox.cleanup();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
