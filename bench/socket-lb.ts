/**
 * Socket-LB benchmark: short-connection RPC (connect, 64 B request, 64 B reply, close) and persistent
 * ping-pong through a VIP, next to direct-to-backend, kube-proxy-style iptables DNAT (iptables-legacy and
 * iptables-nft), nftables with a verdict map and HAProxy in TCP mode, at 1, 1 000 and 10 000 services;
 * the cost of the connect hook itself (UDP connect, no handshake), with and without the per-socket VIP
 * record; the time to program 10 000 services × 3 backends cold and to change one; and the failed
 * connects a client loop sees when a backend dies. Beside sluice runs issue 3's minimal connect4
 * prototype (test/bpf/progs/socklb_min.bpf.c: one hash lookup, a random pick, the rewrite; no record, no
 * sockops), on its own cgroup with the same services: what the mechanism itself costs here, by the same
 * method in the same run; and the prototype again with a sock_ops program that does nothing (sluice's
 * ejection and active counts need a sock_ops program, which runs for every TCP socket of the cgroup).
 *
 * Method (bench/socket-lb-stats.ts): every datapath is measured *paired* with a reference client, the
 * two alternating operation by operation so both see the same noise. Two clients that need different
 * cgroups or namespaces are two processes passing a token through FIFOs (lockstep; which one goes first
 * alternates between sessions); sluice's VIP against direct connections from the same hooked cgroup is
 * also measured in one process alternating the two (mix). A comparison runs SESSIONS sessions of fresh
 * client processes, interleaved with every other comparison's; each session is ROUNDS short rounds after
 * a warm-up round; each round gives the ratio of the two sides' medians, and the table shows the median
 * of all rounds' ratios with their interquartile range and a 95% confidence interval of the median. The
 * A/A rows pair two identical direct clients: the method's own error. Clients, backends and HAProxy are
 * pinned to one CPU (CLIENT_CPU / SERVER_CPU): on this VM, with the backend on the other CPU, every
 * request waits for an idle vCPU to wake (HLT exit) and the A/A pair came out 1.02–1.03, not 1.00.
 *
 * Everything runs inside throwaway network namespaces with no route out (test/support/kernel-sandbox.ts),
 * a fresh one per comparison (so TIME_WAIT sockets of one never slow another's port search); sluice's
 * hooks sit on a throwaway cgroup. The load generator and backend are a small C program
 * (bench/socket-lb-io.c, compiled on first run). IPVS: this kernel has no ip_vs module, so it is
 * reported as not measured.
 *
 * Bounded: fixed counts per measurement, a timeout on every child.
 * Run: make build && node dist/bench/socket-lb.js   (SESSIONS=12 ROUNDS=4 COUNTS=1,1000,10000;
 * SLUICE_BENCH_NFT_10K=1 also loads 10 000 services into nftables, which took ~100 s and tripped the
 * soft-lockup watchdog in an earlier prototype). Quick paired looks: ONLY=<regex of "mode / reference">
 * EXTRAS=0 NO_DOC=1 (only the matching rows, no hook-alone, programming or dead-backend parts, no doc);
 * TARGETS=N changes how many VIPs the RPC client cycles over (default 100; 1 keeps every lookup warm).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LbMaps } from '../agent/abi/lb';
import { readServiceCounters } from '../agent/datapath/counters';
import type { ServiceSpec } from '../agent/datapath/model';
import { resolveLbSettings } from '../agent/datapath/settings';
import { SocketLb } from '../agent/datapath/socket-lb';
import { bpf, packageRoot } from '../native';
import type { BpfLink, BpfMap } from '../native/types';
import { createKernelSandbox, type Netns, type Sandbox } from '../test/support/kernel-sandbox';
import { assertBpfStatsStayedOff, waitForBpfStatsOff, writeBenchmarkSection } from './report';
import {
  median,
  mergeRounds,
  type PairedSummary,
  pairedRounds,
  type RoundSet,
  type Spread,
  summarize,
} from './socket-lb-stats';

const ROOT = packageRoot(__dirname);
const IO_SRC = join(ROOT, 'bench/socket-lb-io.c');
const IO_BIN = join(ROOT, 'build/bench/socket-lb-io');
/** sessions per comparison: fresh client processes each, interleaved with the other comparisons */
const SESSIONS = Math.max(2, Math.min(50, Number(process.env.SESSIONS ?? 12)));
/** measured rounds per session (one more, first, is a discarded warm-up) */
const ROUNDS = Math.max(1, Math.min(50, Number(process.env.ROUNDS ?? 4)));
const COUNTS = (process.env.COUNTS ?? '1,1000,10000').split(',').map(Number);
/** operations per side in one round */
const ROUND_OPS = { rpc: 150, pingpong: 300, udpconnect: 1000 } as const;
type Kind = keyof typeof ROUND_OPS;
const BACKENDS = ['10.0.1.11', '10.0.1.12', '10.0.1.13'];
const BPORT = 8080;
const NFT_10K = process.env.SLUICE_BENCH_NFT_10K === '1';
/** clients run here, backends and proxies on the other CPU */
const CLIENT_CPU = process.env.CLIENT_CPU ?? '0';
const SERVER_CPU = process.env.SERVER_CPU ?? '0';
/** only the comparisons whose "mode / reference" matches (for quick looks; the doc wants all) */
const ONLY = new RegExp(process.env.ONLY ?? '.');
/** EXTRAS=0 skips the hook-alone, programming and dead-backend parts (for quick looks at the ratios) */
const EXTRAS = process.env.EXTRAS !== '0';

interface Samples {
  errors: number;
  codes: Record<string, number>;
  a: number[];
  b?: number[];
}

interface LoopResult {
  n: number;
  errors: number;
  codes: Record<string, number>;
}

function buildIo(): void {
  if (existsSync(IO_BIN) && statSync(IO_BIN).mtimeMs > statSync(IO_SRC).mtimeMs) return;
  mkdirSync(join(ROOT, 'build/bench'), { recursive: true });
  execFileSync('cc', ['-O2', '-Wall', '-o', IO_BIN, IO_SRC], { stdio: 'inherit' });
}

const MIN_OBJECT = join(ROOT, 'build/bpf-test/socklb_min.bpf.o');
const MINIMAL = 'minimal connect4 prototype (issue 3; no record, no sockops)';
const MINIMAL_OPS = 'minimal connect4 prototype + a sock_ops program that does nothing';

/** The minimal prototype's map holds exactly services 0..count-1 (key {VIP, port}, 3 backends). */
function programMinimal(map: BpfMap, had: number, count: number): number {
  const key = (i: number, into: Buffer, at: number) => {
    into.set(ipv4Bytes(vipOf(i)), at);
    into.writeUInt16BE(80, at + 4);
  };
  if (had > count) {
    const keys = Buffer.alloc(8 * (had - count));
    for (let i = count; i < had; i++) key(i, keys, 8 * (i - count));
    map.deleteBatch(keys, had - count);
  }
  const keys = Buffer.alloc(8 * count);
  const values = Buffer.alloc(20 * count);
  for (let i = 0; i < count; i++) {
    key(i, keys, 8 * i);
    BACKENDS.forEach((b, j) => {
      values.set(ipv4Bytes(b), 20 * i + 4 * j);
    });
    values.writeUInt16BE(BPORT, 20 * i + 16);
    values.writeUInt16LE(BACKENDS.length, 20 * i + 18);
  }
  map.updateBatch(keys, values, count);
  return count;
}

const ipv4Bytes = (a: string): Buffer => Buffer.from(a.split('.').map(Number));

const vipOf = (i: number): string => `10.96.${(i >> 8) & 255}.${i & 255}`;

function services(count: number, backends = BACKENDS, port = BPORT): ServiceSpec[] {
  return Array.from({ length: count }, (_, i) => ({
    vip: vipOf(i),
    port: 80,
    backends: backends.map((address) => ({ address, port })),
  }));
}

/** VIP targets an RPC client cycles over (TARGETS=1: one VIP, every lookup warm). */
const TARGETS = Math.max(1, Math.min(1000, Number(process.env.TARGETS ?? 100)));

/** TARGETS targets spread over the services (the first, the last and evenly between). */
function targetLines(count: number): string {
  const picks = new Set<number>();
  const last = Math.max(1, TARGETS - 1);
  for (let k = 0; k < TARGETS; k++) picks.add(Math.min(count - 1, Math.round((k * (count - 1)) / last)));
  return [...picks].map((i) => `${vipOf(i)} 80`).join('\n');
}

/** One client of a comparison: where it runs and what it dials. */
interface Client {
  ns: Netns;
  /** the cgroup (sandbox) whose hooks apply to it; none: no sluice hooks */
  cgroup?: Sandbox;
  /** rpc and udpconnect targets ("addr port" lines) */
  targets: string;
  /** the ping-pong connection's target */
  pingpong: string;
}

class Bench {
  private files = 0;
  private rowCount = 0;
  /** Input files and FIFOs for the load generator and HAProxy; removed at the end. */
  readonly fileDir = mkdtempSync(join(tmpdir(), 'sluice-bench-lb-'));
  /**
   * Namespaces, backends and proxies of the current service count. Removed before the next count, so
   * no count runs beside an earlier one's leftovers (its servers and proxies, and the ~0.5 M TIME_WAIT
   * sockets its rows leave in the kernel's tables for a minute).
   */
  rows: Sandbox = this.freshRows();
  constructor(readonly box: Sandbox) {}

  private freshRows(): Sandbox {
    return createKernelSandbox(`bench-lb-rows${++this.rowCount}`, String(process.pid));
  }

  async nextRows(): Promise<void> {
    await this.rows.cleanup();
    this.rows = this.freshRows();
  }

  file(text: string): string {
    const path = join(this.fileDir, String(++this.files));
    writeFileSync(path, `${text}\n`);
    return path;
  }

  fifo(): string {
    const path = join(this.fileDir, `fifo-${++this.files}`);
    execFileSync('mkfifo', [path]);
    return path;
  }

  run<T>(ns: Netns, args: string[], cgroup?: Sandbox, timeoutMs = 120_000): Promise<T> {
    const argv = [IO_BIN, '--cpu', CLIENT_CPU, ...args];
    const child = (cgroup ?? this.rows).spawn(argv, { netns: ns, inCgroup: cgroup !== undefined });
    return new Promise((resolve, reject) => {
      const out: Buffer[] = [];
      let err = '';
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`socket-lb-io ${args[0]} timed out: ${err}`));
      }, timeoutMs);
      child.stdout?.on('data', (c: Buffer) => {
        out.push(c);
      });
      child.stderr?.on('data', (c: Buffer) => {
        err += c.toString();
      });
      child.on('exit', () => {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(Buffer.concat(out).toString().trim().split('\n').pop()!) as T);
        } catch {
          reject(new Error(`socket-lb-io ${args.join(' ')}: no result (${err})`));
        }
      });
    });
  }

  /**
   * Reference client `ref` and client `test` in two processes, alternating op by op; which one goes
   * first alternates between sessions.
   */
  async lockstep(kind: Kind, ref: Client, test: Client, session: number): Promise<RoundSet> {
    const n = String(ROUND_OPS[kind] * (ROUNDS + 1));
    const [toTest, toRef] = [this.fifo(), this.fifo()];
    const refLeads = session % 2 === 0;
    const side = (c: Client) => (kind === 'pingpong' ? c.pingpong : c.targets);
    const [a, b] = await Promise.all([
      this.run<Samples>(
        ref.ns,
        ['lockstep', kind, side(ref), n, toRef, toTest, refLeads ? '1' : '0'],
        ref.cgroup,
      ),
      this.run<Samples>(
        test.ns,
        ['lockstep', kind, side(test), n, toTest, toRef, refLeads ? '0' : '1'],
        test.cgroup,
      ),
    ]);
    return pairedRounds(a.a, b.a, ROUND_OPS[kind]);
  }

  /** One process alternating target lists a and b op by op (same cgroup, same namespace). */
  async mix(kind: Kind, ns: Netns, cgroup: Sandbox | undefined, a: string, b: string): Promise<RoundSet> {
    const n = String(ROUND_OPS[kind] * (ROUNDS + 1));
    const res = await this.run<Samples>(ns, ['mix', kind, a, b, n], cgroup);
    return pairedRounds(res.a, res.b!, ROUND_OPS[kind]);
  }

  async server(ns: Netns, port = BPORT, addr?: string): Promise<number> {
    const argv = [IO_BIN, '--cpu', SERVER_CPU, 'serve', String(port), ...(addr ? [addr] : [])];
    const child = this.rows.spawn(argv, { netns: ns });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('server not ready')), 10_000);
      child.stdout?.once('data', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    return child.pid!;
  }

  backendNetns(): Netns {
    const ns = this.rows.netns();
    for (const b of BACKENDS) ns.addLoopbackAddress(`${b}/32`);
    // Netfilter NAT runs after the first route lookup, so the VIP range needs a route (kube-proxy nodes
    // have a default one). It points at lo inside this namespace: nothing can leave it.
    execFileSync('ip', ['-n', ns.name, 'route', 'add', '10.96.0.0/16', 'dev', 'lo']);
    return ns;
  }

  /** A fresh namespace with a backend server in it. */
  async served(): Promise<Netns> {
    const ns = this.backendNetns();
    await this.server(ns);
    return ns;
  }
}

/** kube-proxy's nat layout: KUBE-SERVICES → KUBE-SVC-* (statistic random) → KUBE-SEP-* (DNAT). */
function kubeProxyRules(count: number, backends = BACKENDS, port = BPORT): string {
  const lines = ['*nat', ':KUBE-SERVICES - [0:0]', ':KUBE-MARK-MASQ - [0:0]'];
  const rules: string[] = [
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
  ];
  for (let i = 0; i < count; i++) {
    const svc = `KUBE-SVC-${i.toString(16).toUpperCase().padStart(16, '0')}`;
    lines.push(`:${svc} - [0:0]`);
    rules.push(
      `-A KUBE-SERVICES -d ${vipOf(i)}/32 -p tcp -m comment --comment "bench/svc-${i}:http cluster IP" -m tcp --dport 80 -j ${svc}`,
    );
    backends.forEach((b, j) => {
      const sep = `KUBE-SEP-${i.toString(16).toUpperCase().padStart(14, '0')}${j.toString().padStart(2, '0')}`;
      lines.push(`:${sep} - [0:0]`);
      const left = backends.length - j;
      const stat = left > 1 ? ` -m statistic --mode random --probability ${(1 / left).toFixed(11)}` : '';
      rules.push(`-A ${svc} -m comment --comment "bench/svc-${i}:http -> ${b}:${port}"${stat} -j ${sep}`);
      rules.push(`-A ${sep} -s ${b}/32 -m comment --comment "bench/svc-${i}:http" -j KUBE-MARK-MASQ`);
      rules.push(
        `-A ${sep} -p tcp -m comment --comment "bench/svc-${i}:http" -m tcp -j DNAT --to-destination ${b}:${port}`,
      );
    });
  }
  return [...lines, ...rules, 'COMMIT', ''].join('\n');
}

/** nftables: one vmap from VIP . port to a per-service chain that DNATs to numgen-picked backends. */
function nftRules(count: number): string {
  const out = ['table ip bench {', '  map svc { type ipv4_addr . inet_service : verdict; }'];
  for (let i = 0; i < count; i++) {
    const map = BACKENDS.map((b, j) => `${j} : ${b} . ${BPORT}`).join(', ');
    out.push(
      `  chain svc${i} { meta l4proto tcp dnat ip to numgen random mod ${BACKENDS.length} map { ${map} }; }`,
    );
  }
  out.push('  chain output { type nat hook output priority -100; ip daddr . tcp dport vmap @svc; }', '}');
  const elements = Array.from({ length: count }, (_, i) => `${vipOf(i)} . 80 : jump svc${i}`);
  for (let k = 0; k < elements.length; k += 2000) {
    out.push(`add element ip bench svc { ${elements.slice(k, k + 2000).join(', ')} }`);
  }
  return `${out.join('\n')}\n`;
}

function haproxyConfig(count: number, basePort: number): string {
  const out = [
    'global',
    '  maxconn 4000',
    '  nbthread 1',
    'defaults',
    '  mode tcp',
    '  timeout connect 2s',
    '  timeout client 10s',
    '  timeout server 10s',
    'backend pool',
    '  balance roundrobin',
    ...BACKENDS.map((b, j) => `  server b${j} ${b}:${BPORT}`),
  ];
  for (let i = 0; i < count; i++)
    out.push(`frontend f${i}`, `  bind 127.0.0.1:${basePort + i}`, '  default_backend pool');
  return `${out.join('\n')}\n`;
}

interface Row {
  services: number;
  mode: string;
  /** what the ratio compares against */
  against?: string;
  rpc?: PairedSummary;
  pp?: PairedSummary;
  errors: number;
  note?: string;
}

interface Comparison {
  mode: string;
  against: string;
  /** one session of one kind: fresh client processes, (ROUNDS + 1) rounds */
  run: (kind: Kind, session: number) => Promise<RoundSet>;
}

/**
 * SESSIONS sessions of every comparison and kind, interleaved (session s of each comparison, in an
 * order that rotates with s, before session s + 1 of any), so a slow minute of the shared machine
 * lands on all of them. Returns each comparison's rounds by kind.
 */
async function runSessions(
  comparisons: readonly Comparison[],
  kinds: readonly Kind[],
  log: (msg: string) => void,
): Promise<Partial<Record<Kind, RoundSet>>[]> {
  const sets = comparisons.map(() => new Map<Kind, RoundSet[]>());
  for (let session = 0; session < SESSIONS; session++) {
    for (let k = 0; k < comparisons.length; k++) {
      const i = (k + session) % comparisons.length;
      for (const kind of kinds) {
        const set = await comparisons[i]!.run(kind, session);
        const list = sets[i]!.get(kind) ?? [];
        list.push(set);
        sets[i]!.set(kind, list);
      }
    }
    log(`session ${session + 1}/${SESSIONS} done`);
  }
  return sets.map((byKind) => {
    const out: Partial<Record<Kind, RoundSet>> = {};
    for (const [kind, list] of byKind) out[kind] = mergeRounds(list);
    return out;
  });
}

const fmtRatio = (s: Spread): string => `${s.median.toFixed(3)}× (${s.q1.toFixed(3)}–${s.q3.toFixed(3)})`;
const fmtCi = (s: Spread): string => `${s.ciLow.toFixed(3)}–${s.ciHigh.toFixed(3)}`;
const fmtDiff = (s: Spread): string =>
  `${s.median >= 0 ? '+' : ''}${s.median.toFixed(2)} (${s.q1.toFixed(2)} to ${s.q3.toFixed(2)}; CI ${s.ciLow.toFixed(2)} to ${s.ciHigh.toFixed(2)})`;

async function main(): Promise<void> {
  buildIo();
  await waitForBpfStatsOff();
  const box = createKernelSandbox('bench-lb', String(process.pid));
  // A second cgroup, for the hooks without the per-socket record (measurement only).
  const bareBox = createKernelSandbox('bench-lb-bare', String(process.pid));
  const bench = new Bench(box);
  const settings = resolveLbSettings({ reclaimGraceMs: 5 });
  const lb = SocketLb.load(bpf, {
    objectDir: join(ROOT, 'build/bpf'),
    pinRoot: box.bpffsDir,
    settings,
    reaper: false,
  });
  const links: BpfLink[] = lb.attach(box.cgroupPath);
  // The same hooks without the per-socket VIP record (measurement only: getpeername, ejection and
  // least-connections need it), over the same maps, on a second cgroup.
  const bare = SocketLb.load(bpf, {
    objectDir: join(ROOT, 'build/bpf'),
    pinRoot: box.bpffsDir,
    settings,
    reaper: false,
    globals: { lb_sock_storage: Buffer.from([0]) },
  });
  links.push(...bare.attach(bareBox.cgroupPath));
  // Issue 3's minimal connect4 prototype (build/bpf-test/socklb_min.bpf.o) on a third cgroup: the
  // mechanism's own cost, measured by the same method in the same run.
  const minBox = createKernelSandbox('bench-lb-min', String(process.pid));
  const minObject = bpf.loadObject(MIN_OBJECT);
  links.push(minObject.program('lb_min_connect4').attachCgroup(minBox.cgroupPath));
  // ... and on a fourth cgroup, with a sock_ops program that does nothing: what the prescribed
  // mechanism (a sock_ops program on every TCP socket of the cgroup) costs by itself.
  const minOpsBox = createKernelSandbox('bench-lb-minops', String(process.pid));
  links.push(minObject.program('lb_min_connect4').attachCgroup(minOpsBox.cgroupPath));
  links.push(minObject.program('lb_min_sockops').attachCgroup(minOpsBox.cgroupPath));
  let minCount = 0;
  const rows: Row[] = [];
  const programming: string[] = [];
  const hookCost: string[] = [];
  const evidence: string[] = [];
  const lines: string[] = [];
  const started = new Date();
  const loadStart = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
  const log = (msg: string) => process.stderr.write(`${msg}\n`);
  const directTargets = bench.file(BACKENDS.map((b) => `${b} ${BPORT}`).join('\n'));
  const directPingpong = bench.file(`${BACKENDS[0]} ${BPORT}`);
  try {
    for (const count of COUNTS) {
      log(`== ${count} services`);
      const targets = bench.file(targetLines(count));
      const vipPingpong = bench.file(`${vipOf(Math.floor(count / 2))} 80`);
      const specs = services(count);
      const t0 = performance.now();
      const synced = await lb.datapath.sync(specs);
      minCount = programMinimal(minObject.map('lb_min_services'), minCount, count);
      if (count === 10_000) {
        programming.push(
          `| sluice (batched map writes) | ${synced.effectiveMs.toFixed(1)} ms live (${(performance.now() - t0).toFixed(1)} ms with validation, diff and tables) |`,
        );
      }
      const direct = (ns: Netns, cgroup?: Sandbox): Client => ({
        ns,
        cgroup,
        targets: directTargets,
        pingpong: directPingpong,
      });
      // Comparisons: each sets up its namespaces once (fresh ones: TIME_WAIT sockets pile up per
      // namespace) and then runs one session of one kind at a time; sessions of all comparisons are
      // interleaved below.
      const comparisons: Comparison[] = [];
      const compare = async (
        mode: string,
        against: string,
        setup: () => Promise<(kind: Kind, session: number) => Promise<RoundSet>>,
      ) => {
        if (ONLY.test(`${mode} / ${against}`)) comparisons.push({ mode, against, run: await setup() });
      };
      const NO_HOOKS = 'direct, no hooks (lockstep)';
      const SAME_PROCESS = 'direct, same hooked process (mix)';
      await compare('direct to backend (A/A control)', NO_HOOKS, async () => {
        const ns = await bench.served();
        return (kind, session) => bench.lockstep(kind, direct(ns), direct(ns), session);
      });
      await compare('direct to backend (A/A control)', SAME_PROCESS, async () => {
        const ns = await bench.served();
        return (kind) => {
          const both = kind === 'pingpong' ? directPingpong : directTargets;
          return bench.mix(kind, ns, box, both, both);
        };
      });
      await compare('direct, client under the hooks', NO_HOOKS, async () => {
        const ns = await bench.served();
        return (kind, session) => bench.lockstep(kind, direct(ns), direct(ns, box), session);
      });
      // A VIP client whose hooks are those of `cgroup`, paired with direct connections: from a second
      // process outside the hooks (lockstep), or alternating in the same process (mix).
      const vipLockstep = (cgroup: Sandbox) => async () => {
        const ns = await bench.served();
        const vip: Client = { ns, cgroup, targets, pingpong: vipPingpong };
        return (kind: Kind, session: number) => bench.lockstep(kind, direct(ns), vip, session);
      };
      const vipMix = (cgroup: Sandbox) => async () => {
        const ns = await bench.served();
        return (kind: Kind) =>
          kind === 'pingpong'
            ? bench.mix(kind, ns, cgroup, directPingpong, vipPingpong)
            : bench.mix(kind, ns, cgroup, directTargets, targets);
      };
      const BARE = 'sluice socket-LB without the per-socket record (measurement only)';
      await compare('sluice socket-LB', NO_HOOKS, vipLockstep(box));
      await compare('sluice socket-LB', SAME_PROCESS, vipMix(box));
      await compare(MINIMAL, NO_HOOKS, vipLockstep(minBox));
      await compare(MINIMAL_OPS, NO_HOOKS, vipLockstep(minOpsBox));
      await compare(BARE, NO_HOOKS, vipLockstep(bareBox));
      await compare(BARE, SAME_PROCESS, vipMix(bareBox));
      for (const flavour of ['legacy', 'nft'] as const) {
        await compare(`iptables-${flavour} (kube-proxy chains)`, NO_HOOKS, async () => {
          const ns = await bench.served();
          const rules = bench.file(kubeProxyRules(count));
          const t = performance.now();
          execFileSync('ip', ['netns', 'exec', ns.name, `iptables-${flavour}-restore`, rules], {
            stdio: 'pipe',
            timeout: 600_000,
          });
          const ms = performance.now() - t;
          if (count === 10_000)
            programming.push(`| iptables-${flavour}-restore, kube-proxy layout | ${ms.toFixed(0)} ms |`);
          const ref = direct(await bench.served());
          const test: Client = { ns, targets, pingpong: vipPingpong };
          return (kind, session) => bench.lockstep(kind, ref, test, session);
        });
      }
      if (count < 10_000 || NFT_10K) {
        await compare('nftables (verdict map)', NO_HOOKS, async () => {
          const ns = await bench.served();
          const rules = bench.file(nftRules(count));
          const t = performance.now();
          execFileSync('ip', ['netns', 'exec', ns.name, 'nft', '-f', rules], {
            stdio: 'pipe',
            timeout: 900_000,
          });
          const ms = performance.now() - t;
          programming.push(
            `| nft -f, verdict map + chain per service, ${count} services | ${ms.toFixed(0)} ms |`,
          );
          const ref = direct(await bench.served());
          const test: Client = { ns, targets, pingpong: vipPingpong };
          return (kind, session) => bench.lockstep(kind, ref, test, session);
        });
      } else {
        rows.push({
          services: count,
          mode: 'nftables (verdict map)',
          errors: 0,
          note: 'not run (opt-in: SLUICE_BENCH_NFT_10K=1)',
        });
      }
      await compare('HAProxy TCP mode', NO_HOOKS, async () => {
        const ns = await bench.served();
        const base = 20_000;
        const cfg = bench.file(haproxyConfig(count, base));
        bench.rows.spawn(['taskset', '-c', SERVER_CPU, 'haproxy', '-db', '-f', cfg], { netns: ns });
        await sleep(count > 1000 ? 3000 : 800);
        const hTargets = bench.file(
          targetLines(count)
            .split('\n')
            .map(
              (_, k, all) =>
                `127.0.0.1 ${base + Math.round((k * (count - 1)) / Math.max(1, all.length - 1))}`,
            )
            .join('\n'),
        );
        const ref = direct(await bench.served());
        const test: Client = {
          ns,
          targets: hTargets,
          pingpong: bench.file(`127.0.0.1 ${base + Math.floor(count / 2)}`),
        };
        return (kind, session) => bench.lockstep(kind, ref, test, session);
      });
      const results = await runSessions(comparisons, ['rpc', 'pingpong'], log);
      // Evidence that the services were programmed and the VIP connects went through the hooks: the
      // services in the map, and the translations their counters saw.
      {
        const state = lb.datapath.writer.state;
        let translated = 0n;
        let reached = 0;
        for (const service of state.services.values()) {
          const connects = readServiceCounters(
            lb.maps,
            service.id,
            [...service.members.values()].map((m) => m.id),
          ).connects;
          translated += connects;
          if (connects > 0n) reached++;
        }
        // Records still held once the rows' connections are closed (TIME_WAIT holds none): a leak would
        // push later sockets into socket storage, the slow path.
        const held = lb.sockLb
          .map(LbMaps.sockTable)
          .lookupBatch()
          .values.filter((v) => v.readBigUInt64LE(0) !== 0n).length;
        evidence.push(
          `${count} services: ${lb.maps.services.lookupBatch().keys.length} in the service map, ${translated} connects translated by the hooks, to ${reached} distinct services, ${held} socket-table entries still held afterwards`,
        );
      }
      for (const [i, c] of comparisons.entries()) {
        const rpc = summarize(results[i]!.rpc!);
        const pp = summarize(results[i]!.pingpong!);
        rows.push({
          services: count,
          mode: c.mode,
          against: c.against,
          rpc,
          pp,
          errors: rpc.errors + pp.errors,
        });
        log(
          `${c.mode} / ${c.against}: rpc ${fmtRatio(rpc.ratio)} CI ${fmtCi(rpc.ratio)} (${rpc.a.p50.toFixed(1)} → ${rpc.b.p50.toFixed(1)} µs); ping-pong ${fmtRatio(pp.ratio)}; errors ${rpc.errors + pp.errors}`,
        );
      }

      // the hook alone: UDP connect (no handshake), every comparison paired. A UDP connect is
      // translated only for UDP services: the same 10 000 services as UDP for this part.
      if (count === 10_000 && EXTRAS) {
        {
          await lb.datapath.sync(specs.map((spec) => ({ ...spec, protocol: 'udp' as const })));
          const ns = bench.backendNetns();
          const none = direct(ns);
          const miss = direct(ns, box);
          const vip: Client = { ns, cgroup: box, targets, pingpong: vipPingpong };
          const vipBare: Client = { ns, cgroup: bareBox, targets, pingpong: vipPingpong };
          const udp: Comparison[] = [
            {
              mode: 'no hooks → hooks attached, not a VIP (lockstep)',
              against: '',
              run: (kind, session) => bench.lockstep(kind, none, miss, session),
            },
            {
              mode: 'no hooks → VIP translated + per-socket VIP record (lockstep)',
              against: '',
              run: (kind, session) => bench.lockstep(kind, none, vip, session),
            },
            {
              mode: 'hooks attached, not a VIP → VIP translated + record (one process, mix)',
              against: '',
              run: (kind) => bench.mix(kind, ns, box, directTargets, targets),
            },
            {
              mode: 'VIP translated, no record (measurement only) → VIP translated + record (lockstep)',
              against: '',
              run: (kind, session) => bench.lockstep(kind, vipBare, vip, session),
            },
          ];
          const results = await runSessions(udp, ['udpconnect'], log);
          for (const [i, c] of udp.entries()) {
            const res = summarize(results[i]!.udpconnect!);
            hookCost.push(
              `| ${c.mode} | ${res.a.p50.toFixed(2)} | ${res.b.p50.toFixed(2)} | ${fmtDiff(res.diff)} |`,
            );
          }
          await lb.datapath.sync(specs);
        }
        // change one service on top of 10 000: the incremental update, and a full re-sync for comparison
        const one = (k: number): ServiceSpec => ({
          vip: vipOf(4321),
          port: 80,
          backends: (k % 2 ? BACKENDS : BACKENDS.slice(0, 1)).map((address) => ({ address, port: BPORT })),
        });
        const live: number[] = [];
        const whole: number[] = [];
        for (let k = 0; k < 7; k++) {
          const t = performance.now();
          const res = await lb.datapath.update({ upsert: [one(k)] });
          live.push(res.effectiveMs);
          whole.push(performance.now() - t - (res.totalMs - res.effectiveMs));
        }
        const full: number[] = [];
        for (let k = 0; k < 3; k++) {
          const all = services(count);
          all[4321] = one(k);
          const t = performance.now();
          const res = await lb.datapath.sync(all);
          full.push(performance.now() - t - (res.totalMs - res.effectiveMs));
        }
        programming.push(
          `| sluice: change one service on top of 10 000 (update()) | ${median(whole).toFixed(2)} ms (map writes ${median(live).toFixed(2)} ms; median of 7) |`,
          `| sluice: the same change as a full sync() of all 10 000 | ${median(full).toFixed(0)} ms (recomputes and diffs every service; median of 3) |`,
        );
        // iptables: kube-proxy rewrites the service's chains; a --noflush restore of one service
        for (const flavour of ['legacy', 'nft'] as const) {
          const ns = bench.backendNetns();
          execFileSync(
            'ip',
            ['netns', 'exec', ns.name, `iptables-${flavour}-restore`, bench.file(kubeProxyRules(count))],
            { stdio: 'pipe', timeout: 600_000 },
          );
          const svc = `KUBE-SVC-${(4321).toString(16).toUpperCase().padStart(16, '0')}`;
          const one = [
            '*nat',
            `:${svc} - [0:0]`,
            `-A ${svc} -j KUBE-SEP-${(4321).toString(16).toUpperCase().padStart(14, '0')}00`,
            'COMMIT',
            '',
          ].join('\n');
          const t = performance.now();
          execFileSync(
            'ip',
            ['netns', 'exec', ns.name, `iptables-${flavour}-restore`, '--noflush', bench.file(one)],
            { stdio: 'pipe' },
          );
          programming.push(
            `| iptables-${flavour}-restore --noflush: change one service on top of 10 000 | ${(performance.now() - t).toFixed(1)} ms |`,
          );
        }
      }
      // back to empty for the next count, on a machine without this count's namespaces and processes
      await lb.datapath.sync([]);
      await bench.nextRows();
    }

    // failed connects seen by a client loop when a backend dies
    if (EXTRAS) {
      const port = 9090;
      const failures: string[] = [];
      for (const mode of ['sluice', 'iptables-legacy'] as const) {
        const ns = bench.backendNetns();
        const pids: number[] = [];
        for (const b of BACKENDS) pids.push(await bench.server(ns, port, b));
        if (mode === 'sluice') {
          await lb.datapath.sync([
            {
              vip: '10.96.200.1',
              port: 80,
              backends: BACKENDS.map((address) => ({ address, port })),
              ejection: { threshold: 3 },
            },
          ]);
        } else {
          execFileSync(
            'ip',
            [
              'netns',
              'exec',
              ns.name,
              'iptables-legacy-restore',
              bench.file(kubeProxyRules(1, BACKENDS, port).replaceAll('10.96.0.0', '10.96.200.1')),
            ],
            { stdio: 'pipe' },
          );
        }
        const target = bench.file('10.96.200.1 80');
        const loop = bench.run<LoopResult>(
          ns,
          ['loop', target, '3000', '300'],
          mode === 'sluice' ? box : undefined,
        );
        await sleep(400);
        process.kill(pids[2]!, 'SIGKILL');
        const res = await loop;
        failures.push(
          `| ${mode === 'sluice' ? 'sluice (threshold 3, no userspace action)' : 'iptables-legacy kube-proxy chains (until an endpoint update)'} | 3000 | ${res.errors} | ${JSON.stringify(res.codes)} |`,
        );
        if (mode === 'sluice') await lb.datapath.sync([]);
      }
      lines.push(
        '',
        '**Failed connects when a backend dies** (3 backends, a client loop of 3 000 short connections 0.3 ms apart; one backend killed 0.4 s in; nothing in userspace reacts):',
        '',
        '| datapath | connects | failed | errors |',
        '|---|---:|---:|---:|',
        ...failures,
      );
    }
  } finally {
    for (const link of links) link.close();
    bare.close();
    minObject.close();
    lb.close();
    await bench.rows.cleanup();
    await minOpsBox.cleanup();
    await minBox.cleanup();
    await bareBox.cleanup();
    await box.cleanup();
    rmSync(bench.fileDir, { recursive: true, force: true });
  }
  const loadEnd = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];

  const table: string[] = [
    '| services | datapath | paired against | RPC p50 µs: reference → this | RPC ratio, median of rounds (IQR) | 95% CI of the median | ping-pong p50 µs: reference → this | ping-pong ratio (IQR) | errors |',
    '|---:|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  const us = (p: PairedSummary) => `${p.a.p50.toFixed(1)} → ${p.b.p50.toFixed(1)}`;
  for (const count of COUNTS) {
    for (const r of rows.filter((row) => row.services === count)) {
      if (r.note || !r.rpc || !r.pp) {
        table.push(`| ${count} | ${r.mode} | ${r.note ?? ''} | | | | | | |`);
        continue;
      }
      table.push(
        `| ${count} | ${r.mode} | ${r.against} | ${us(r.rpc)} | ${fmtRatio(r.rpc.ratio)} | ${fmtCi(r.rpc.ratio)} | ${us(r.pp)} | ${fmtRatio(r.pp.ratio)} | ${r.errors} |`,
      );
    }
    table.push(`| ${count} | IPVS | not measured: this kernel has no ip_vs module | | | | | | |`);
  }
  const target = rows
    .filter(
      (r) =>
        (r.mode === 'sluice socket-LB' || r.mode === MINIMAL || r.mode === MINIMAL_OPS) &&
        r.services === 10_000 &&
        r.rpc,
    )
    .map(
      (r) =>
        `${r.mode === MINIMAL ? 'the minimal prototype' : r.mode === MINIMAL_OPS ? 'the prototype with a no-op sock_ops program' : 'sluice'} against ${r.against}: RPC ${r.rpc!.ratio.median.toFixed(3)}× (95% CI ${fmtCi(r.rpc!.ratio)}), ping-pong ${r.pp!.ratio.median.toFixed(3)}× (95% CI ${fmtCi(r.pp!.ratio)})`,
    );
  const cpuModel = readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? 'unknown CPU';
  const section = [
    '## Socket-LB (bench/socket-lb.ts)',
    '',
    `Run ${started.toISOString()}, kernel ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()}, ${cpuModel}, 2 vCPUs shared with other work (1-minute load average ${loadStart} at the start, ${loadEnd} at the end). Load generator and backend: bench/socket-lb-io.c, one connection at a time. RPC: connect, 64 B request, 64 B reply, close, cycling over ${TARGETS} VIPs spread across all services (direct: over the 3 backends); ping-pong: 64 B round trips on one connection (to the middle service's VIP).`,
    '',
    `Method: every row is **paired** with a reference client, the two alternating operation by operation so both see the same noise: two processes passing a token through FIFOs (lockstep; which goes first alternates between sessions), or one process alternating direct and VIP connects (mix, same hooked cgroup). ${SESSIONS} sessions per row (fresh client processes, interleaved with the other rows' sessions), each ${ROUNDS} rounds of ${ROUND_OPS.rpc} RPCs (${ROUND_OPS.pingpong} round trips) per side after a warm-up round: ${SESSIONS * ROUNDS} rounds. Each round gives the ratio of the two sides' medians; a cell is the median of those ratios (interquartile range), with a distribution-free 95% confidence interval of the median; p50 columns are over all measured operations. Clients, backends and HAProxy are pinned to CPU ${CLIENT_CPU}${CLIENT_CPU === SERVER_CPU ? '' : `/${SERVER_CPU}`} (with the backend on the other vCPU each request waits for an idle vCPU to wake and the A/A pair was biased by 2–3%). Every row has its own fresh network namespaces (no route out), removed with their servers and proxies before the next service count. The A/A rows pair two identical direct clients: how far from 1.000 each method itself strays.`,
    '',
    ...table,
    '',
    `Programmed and translated (from the maps and the services' counters, after each service count's rows): ${evidence.join('; ')}.`,
    '',
    `**Target** (issue 3: VIP within 3% of direct at 10 000 services), this run: ${target.join('; ')}.`,
    '',
    '**Programming time** (3 backends per service):',
    '',
    '| what | time |',
    '|---|---:|',
    ...programming,
    '',
    `**The connect hook itself**: UDP connect() (no handshake), the 10 000 services programmed as UDP services; pairs as above (${ROUNDS} rounds of ${ROUND_OPS.udpconnect} connects per side); cost = median over rounds of the difference of the two sides' medians (IQR; 95% CI of the median):`,
    '',
    '| pair: reference → this | reference connect() p50 µs | this p50 µs | cost µs |',
    '|---|---:|---:|---:|',
    ...hookCost,
    ...lines,
    '',
  ].join('\n');
  assertBpfStatsStayedOff();
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench/results/socket-lb.md'), section);
  if (process.env.NO_DOC !== '1') writeBenchmarkSection('socket-lb', section);
  process.stdout.write(`${section}\n`);
}

main().catch((error) => {
  process.stderr.write(`${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
