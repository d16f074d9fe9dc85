/**
 * Controller benchmark: 1000 simulated agents on real gRPC streams over loopback, 10 000 services.
 *
 *   make ts && node dist/bench/controller.js [--agents 1000] [--services 10000] [--changes 20] [--dry-run]
 *
 * Measures, with the controller in its own process (bin/sluice-controller's code, JSON catalog file):
 * - full snapshot: one fresh agent connecting until it has the whole catalog decoded (several runs);
 * - one-service change: from the file being replaced (rename) until every agent has ACKed the new version
 *   (the ACK leaving the agent), p50/p99 over several changes; also until the first agent has it;
 * - controller RSS after the agents connected and at the end (VmRSS, VmHWM from /proc).
 * Writes a Markdown section into docs/benchmarks.md between the controller markers, and the same text to
 * bench/results/controller.md. Bounded: connection and change phases have deadlines.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { AgentClient, type AppliedState } from '../controller/agent-client';
import { benchCatalog } from './controller-catalog';
import { writeBenchmarkSection } from './report';

const ROOT = join(__dirname, '..', '..');

/** The controller's own timings per catalog load, from its log. */
const controllerTimings: { readMs: number; parseMs: number; applyMs?: number; fanOutMs?: number }[] = [];

/** Reads the controller's JSON log until it says where it listens; later warnings are passed through. */
function listeningPort(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let found = false;
    child.once('exit', (code) => reject(new Error(`controller exited with ${code}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let entry: {
        msg?: string;
        port?: number;
        level?: number;
        readMs?: number;
        parseMs?: number;
        applyMs?: number;
        fanOutMs?: number;
      };
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      if (entry.msg === 'catalog read')
        controllerTimings.push({ readMs: entry.readMs ?? 0, parseMs: entry.parseMs ?? 0 });
      if (entry.msg === 'catalog changed') Object.assign(controllerTimings.at(-1) ?? {}, entry);
      if (!found && entry.msg === 'controller listening' && typeof entry.port === 'number') {
        found = true;
        resolve(entry.port);
      } else if ((entry.level ?? 0) >= 40) {
        console.error(line);
      }
    });
  });
}

async function until(check: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

function procMemory(pid: number): { rssMiB: number; hwmMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
}

function writeAtomic(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      agents: { type: 'string', default: '1000' },
      services: { type: 'string', default: '10000' },
      changes: { type: 'string', default: '20' },
      snapshots: { type: 'string', default: '3' },
      // Prints the results without touching docs/benchmarks.md (for trial runs).
      'dry-run': { type: 'boolean', default: false },
    },
  });
  const agentCount = Number(values.agents);
  const serviceCount = Number(values.services);
  const changeCount = Number(values.changes);
  const snapshotRuns = Number(values.snapshots);

  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-controller-'));
  const path = join(dir, 'services.json');
  const bumps = new Map<number, number>();
  const writeCatalog = () => writeAtomic(path, JSON.stringify(benchCatalog(serviceCount, agentCount, bumps)));
  writeCatalog();
  const fileBytes = readFileSync(path).length;

  // The controller binds port 0 and logs the port it got (no race with other processes for a "free" port).
  const child: ChildProcess = spawn(
    process.execPath,
    [
      // e.g. SLUICE_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' to profile the controller
      ...(process.env.SLUICE_BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      join(ROOT, 'dist/controller/main.js'),
      '--config',
      path,
      '--listen',
      '127.0.0.1:0',
      '--log-level',
      'info',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = await listeningPort(child);
  const target = `127.0.0.1:${port}`;
  const clients: AgentClient[] = [];
  const stopAll = () => {
    for (const c of clients) c.stop();
    child.kill('SIGTERM');
  };
  process.once('SIGINT', () => {
    stopAll();
    process.exit(130);
  });

  try {
    // ---- full snapshot: a fresh agent, several times ----
    const snapshotMs: number[] = [];
    let base: AppliedState | null = null;
    for (let run = 0; run < snapshotRuns; run++) {
      let doneAt = 0;
      const started = performance.now();
      const probe: AgentClient = new AgentClient({
        target,
        node: `snapshot-probe-${run}`,
        backoff: { initialMs: 100, maxMs: 500 },
        onUpdate: (u) => {
          doneAt = performance.now();
          probe.ack(u.version);
        },
      });
      probe.start();
      // The first run also waits for the controller process to start and load the file.
      await until(() => doneAt > 0, 'the snapshot', 120_000);
      if (run > 0 || snapshotRuns === 1) snapshotMs.push(doneAt - started);
      base = probe.applied;
      probe.stop();
    }
    if (!base) throw new Error('no snapshot');
    const memAfterLoad = procMemory(child.pid!);

    // ---- 1000 agents on their own channels; they start from the probe's version (an empty delta) ----
    const applied = new Int32Array(agentCount);
    const ackAt = new Float64Array(agentCount);
    const connectStart = performance.now();
    for (let i = 0; i < agentCount; i++) {
      const c: AgentClient = new AgentClient({
        target,
        node: `node-${i}`,
        zone: `zone-${i % 3}`,
        initial: { epoch: base.epoch, version: base.version, domain: base.domain, services: new Map() },
        backoff: { initialMs: 200, maxMs: 2000 },
        onUpdate: (u) => {
          c.ack(u.version);
          applied[i] = u.version;
          ackAt[i] = performance.now();
        },
      });
      clients.push(c);
      c.start();
      if (i % 100 === 99) await new Promise((r) => setImmediate(r));
    }
    let version = base.version;
    await until(() => applied.every((v) => v === version), `${agentCount} agents in sync`, 120_000);
    const connectMs = performance.now() - connectStart;
    const memConnected = procMemory(child.pid!);

    // ---- one-service changes ----
    const allAckMs: number[] = [];
    const firstMs: number[] = [];
    for (let k = 0; k < changeCount; k++) {
      const service = (k * 7919) % serviceCount;
      bumps.set(service, (bumps.get(service) ?? 1) + 1);
      const text = JSON.stringify(benchCatalog(serviceCount, agentCount, bumps));
      writeFileSync(`${path}.tmp`, text);
      await new Promise((r) => setTimeout(r, 200)); // let the previous change settle
      const t0 = performance.now();
      renameSync(`${path}.tmp`, path);
      version++;
      await until(() => applied.every((v) => v === version), `change ${k + 1} everywhere`, 30_000);
      let first = Number.POSITIVE_INFINITY;
      let last = 0;
      for (const t of ackAt) {
        if (t < first) first = t;
        if (t > last) last = t;
      }
      allAckMs.push(last - t0);
      firstMs.push(first - t0);
    }
    const memEnd = procMemory(child.pid!);
    const changeTimings = controllerTimings.slice(-changeCount);
    const med = (f: (t: (typeof changeTimings)[number]) => number | undefined) =>
      percentile(
        changeTimings.map((t) => f(t) ?? Number.NaN),
        50,
      );

    const fmt = (n: number) => n.toFixed(1);
    const lines = [
      `Run ${new Date().toISOString()} on ${cpus().length} CPUs (${cpus()[0]?.model.trim()}), Node ${process.version}; ` +
        'controller in its own process, agents in the benchmark process, all on loopback. ' +
        `The machine was shared with other jobs (load average ${loadavg()
          .map((l) => l.toFixed(1))
          .join(' / ')} at the end): compare ratios, not absolutes.`,
      '',
      `Command: \`make ts && node dist/bench/controller.js --agents ${agentCount} --services ${serviceCount} --changes ${changeCount}\``,
      '',
      '| measure | value |',
      '| --- | --- |',
      `| agents (gRPC streams, one channel each) | ${agentCount} |`,
      `| services / backends | ${serviceCount} / ${serviceCount * 2} |`,
      `| catalog file (JSON) | ${(fileBytes / 1024 / 1024).toFixed(1)} MiB |`,
      `| full snapshot to a fresh agent, median of ${snapshotMs.length} | ${fmt(percentile(snapshotMs, 50))} ms |`,
      `| ${agentCount} agents connected and in sync | ${fmt(connectMs)} ms |`,
      `| one-service change → all ${agentCount} agents ACKed, p50 | ${fmt(percentile(allAckMs, 50))} ms |`,
      `| one-service change → all ${agentCount} agents ACKed, p99 (${changeCount} changes) | ${fmt(percentile(allAckMs, 99))} ms |`,
      `| one-service change → first agent ACKed, p50 | ${fmt(percentile(firstMs, 50))} ms |`,
      `| of which in the controller, p50: read file / parse+validate / diff+apply / write to all streams | ` +
        `${fmt(med((t) => t.readMs))} / ${fmt(med((t) => t.parseMs))} / ${fmt(med((t) => t.applyMs))} / ` +
        `${fmt(med((t) => t.fanOutMs))} ms |`,
      `| controller RSS after loading the catalog | ${fmt(memAfterLoad.rssMiB)} MiB |`,
      `| controller RSS with ${agentCount} agents | ${fmt(memConnected.rssMiB)} MiB |`,
      `| controller RSS at the end / peak (VmHWM) | ${fmt(memEnd.rssMiB)} / ${fmt(memEnd.hwmMiB)} MiB |`,
      '',
      `Target: p99 under 250 ms for a one-service change to ${agentCount} agents — ` +
        `${percentile(allAckMs, 99) < 250 ? 'met' : 'NOT met'} in this run.`,
      '',
      `All-ACKed times (ms): ${allAckMs.map((v) => v.toFixed(0)).join(', ')}`,
    ];
    const section = lines.join('\n');
    console.log(section);
    if (!values['dry-run']) {
      mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
      writeFileSync(join(ROOT, 'bench/results/controller.md'), `${section}\n`);
      writeBenchmarkSection('controller', `## Controller (bench/controller.ts)\n\n${section}`);
    }
  } finally {
    const exited = new Promise((r) =>
      child.exitCode !== null
        ? r(null)
        : child.once('exit', (code, signal) => r(console.error('controller exit', code, signal))),
    );
    stopAll();
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
