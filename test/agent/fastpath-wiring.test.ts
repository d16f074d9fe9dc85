/**
 * The fast path as the agent runs it (agent/fastpath-wiring.ts): `--fastpath` modes, the kernel probe,
 * links pinned in the agent's layout (adopted on restart, removed by uninstall), node-local endpoints fed
 * from each applied plan, counters exported as sluice_fastpath_* metrics; off means nothing attached.
 * Real BPF, real sockets (build/fastpath-io) in a sandbox netns and cgroup.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FpConfigCodec } from '../../agent/abi/fastpath';
import { loadAgentConfig, type RunConfig } from '../../agent/config';
import { afterEachPlan, MemorySink } from '../../agent/datapath-sink';
import type { FastPathCounters } from '../../agent/fastpath/fastpath';
import { MAP_CONFIG, ZERO_FASTPATH_COUNTERS } from '../../agent/fastpath/fastpath';
import {
  AgentFastPath,
  FASTPATH_OBJECT_PATH,
  fastPathSettingsFor,
  localEndpoints,
} from '../../agent/fastpath-wiring';
import { main, runAgent } from '../../agent/main';
import { AgentMetrics } from '../../agent/metrics';
import type { ProgrammedService } from '../../agent/node-agent';
import { cgroupId, pinLayout, uninstall } from '../../agent/pins';
import { bpf as nativeBpf, packageRoot } from '../../native';
import { fastpathIoAvailable, runFastpathIo } from '../support/fastpath-io';
import { describePrivileged } from '../support/privileged';
import { createSandbox, type Netns, type Sandbox } from '../support/sandbox';

const OBJECT = join(packageRoot(__dirname), FASTPATH_OBJECT_PATH);
const MESH_PORT = 18090;
const OTHER_PORT = 18091;

function service(
  name: string,
  protocol: 'TCP' | 'UDP',
  backends: { address: string; port: number; local: boolean; draining?: boolean }[],
): ProgrammedService {
  return {
    service: `default/${name}`,
    vip: '10.96.0.10',
    port: 80,
    protocol,
    algorithm: 'random',
    affinityTimeoutMs: null,
    outlier: null,
    backends: backends.map((b) => ({
      id: `default/${name}|${b.address}:${b.port}`,
      address: b.address,
      port: b.port,
      weight: 1,
      local: b.local,
      draining: b.draining ?? false,
    })),
  } as ProgrammedService;
}

function counters(values: Partial<FastPathCounters>): FastPathCounters {
  return { ...ZERO_FASTPATH_COUNTERS, ...values };
}

/** The value of one unlabelled (or fully labelled) series in Prometheus text, undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('fast path wiring (pure parts)', () => {
  it('maps --fastpath modes onto settings', () => {
    expect(fastPathSettingsFor('off')).toMatchObject({ enabled: false, scope: 'mesh' });
    expect(fastPathSettingsFor('mesh')).toMatchObject({ enabled: true, scope: 'mesh' });
    expect(fastPathSettingsFor('all')).toMatchObject({ enabled: true, scope: 'all' });
  });

  it('takes the node-local TCP backends of a plan, draining ones included, once each', () => {
    const plan = [
      service('web', 'TCP', [
        { address: '10.0.1.2', port: 8080, local: true },
        { address: '10.0.2.2', port: 8080, local: false },
        { address: '10.0.1.3', port: 8080, local: true, draining: true },
      ]),
      // The same backend behind a second VIP port: one endpoint.
      service('web-alt', 'TCP', [{ address: '10.0.1.2', port: 8080, local: true }]),
      service('dns', 'UDP', [{ address: '10.0.1.4', port: 53, local: true }]),
    ];
    expect(localEndpoints(plan)).toEqual([
      { ip: '10.0.1.2', port: 8080 },
      { ip: '10.0.1.3', port: 8080 },
    ]);
  });

  it('exports kernel counters as counter increments, restarting from zero after a reset', async () => {
    const registry = new Registry();
    const metrics = new AgentMetrics(registry, { processMetrics: false });
    let text = await registry.metrics();
    expect(sample(text, 'sluice_fastpath_mode{mode="off"}')).toBe(1);
    metrics.observeFastPathCounters(
      counters({ redirectedMsgs: 10n, redirectedBytes: 1000n, insertFailures: 2n, fallbackNoPeer: 3n }),
    );
    metrics.observeFastPathCounters(
      counters({ redirectedMsgs: 15n, redirectedBytes: 1500n, insertFailures: 2n }),
    );
    text = await registry.metrics();
    expect(sample(text, 'sluice_fastpath_redirected_messages_total')).toBe(15);
    expect(sample(text, 'sluice_fastpath_redirected_bytes_total')).toBe(1500);
    expect(sample(text, 'sluice_fastpath_insert_failures_total')).toBe(2);
    // The no-peer reading fell from 3 to 0: a recreated map, counted from zero (no negative increment).
    expect(sample(text, 'sluice_fastpath_fallbacks_total{reason="no_peer"}')).toBe(3);
    metrics.setFastPathMode('mesh');
    text = await registry.metrics();
    expect(sample(text, 'sluice_fastpath_mode{mode="mesh"}')).toBe(1);
    expect(sample(text, 'sluice_fastpath_mode{mode="off"}')).toBe(0);
  });
});

describePrivileged('fast path in the agent', () => {
  let sandbox: Sandbox;
  let ns: Netns;
  let bpffs: string;
  let instance = 0;
  const open: AgentFastPath[] = [];

  beforeEach(() => {
    const missing = fastpathIoAvailable();
    if (missing) throw new Error(missing);
    sandbox = createSandbox('fastpath-wiring');
    ns = sandbox.netns();
    bpffs = join(sandbox.bpffsDir, `agent${++instance}`);
  });

  afterEach(async () => {
    for (const fp of open.splice(0)) fp.close();
    uninstall(nativeBpf, { bpffsDir: bpffs });
    await sandbox?.cleanup();
  });

  function agentFastPath(mode: 'off' | 'mesh' | 'all', registry = new Registry(), objectPath = OBJECT) {
    const metrics = new AgentMetrics(registry, { processMetrics: false });
    const fp = new AgentFastPath({
      bpf: nativeBpf,
      mode,
      bpffsDir: bpffs,
      cgroupPath: sandbox.cgroupPath,
      objectPath,
      log: pino({ level: 'silent' }),
      metrics,
      pollIntervalMs: 0,
    }).start();
    open.push(fp);
    return { fp, registry };
  }

  const linkPins = () => {
    const layout = pinLayout(bpffs);
    const id = cgroupId(sandbox.cgroupPath);
    return ['fp_sockops', 'fp_msg'].map((p) => layout.linkPin(id, 'fastpath', p));
  };
  /** Program types attached to the sandbox cgroup, as the kernel reports them. */
  const cgroupPrograms = () => {
    const out = execFileSync('bpftool', ['-j', 'cgroup', 'show', sandbox.cgroupPath], { encoding: 'utf8' });
    return (JSON.parse(out.trim() || '[]') as { attach_type: string }[]).map((p) => p.attach_type);
  };
  const plan = [
    service('web', 'TCP', [
      { address: '127.0.0.1', port: MESH_PORT, local: true },
      { address: '10.0.2.2', port: MESH_PORT, local: false },
    ]),
  ];
  const xfer = (port: number) =>
    runFastpathIo(sandbox, ns, ['xfer', 65536, 'huge'], { nonblocking: true, port, timeoutMs: 30_000 });

  it('mesh: attaches pinned links, takes the plan’s local endpoints and redirects a same-node connection', async () => {
    const { fp, registry } = agentFastPath('mesh');
    expect(fp.unavailable).toBeUndefined();
    expect(fp.mode).toBe('mesh');
    for (const pin of linkPins()) expect(existsSync(pin)).toBe(true);
    expect(cgroupPrograms()).toContain('cgroup_sock_ops');

    const sink = afterEachPlan(new MemorySink(), (services) => fp.setServices(services));
    await sink.apply(plan);
    expect(fp.fastPath?.endpoints()).toEqual([{ ip: '127.0.0.1', port: MESH_PORT }]);

    // Not a mesh endpoint: untouched.
    const other = await xfer(OTHER_PORT);
    expect(other.ok).toBe(true);
    expect(fp.poll()?.inserts).toBe(0n);

    const mesh = await xfer(MESH_PORT);
    expect(mesh.ok).toBe(true);
    const after = fp.poll();
    expect(after?.inserts).toBe(2n);
    expect(after?.redirectedBytes).toBe(131072n);
    const text = await registry.metrics();
    expect(sample(text, 'sluice_fastpath_redirected_bytes_total')).toBe(131072);
    expect(sample(text, 'sluice_fastpath_redirected_messages_total')).toBeGreaterThan(0);
    expect(sample(text, 'sluice_fastpath_inserts_total')).toBe(2);
    expect(sample(text, 'sluice_fastpath_endpoints')).toBe(1);
    expect(sample(text, 'sluice_fastpath_mode{mode="mesh"}')).toBe(1);

    // A plan without the local backend takes it out of the map: new connections stay on TCP.
    await sink.apply([service('web', 'TCP', [{ address: '10.0.2.2', port: MESH_PORT, local: false }])]);
    expect(fp.fastPath?.endpoints()).toEqual([]);
    expect((await xfer(MESH_PORT)).ok).toBe(true);
    expect(fp.poll()?.inserts).toBe(2n);
  });

  it('a restart adopts the pinned links and keeps redirecting; uninstall removes them', async () => {
    // An earlier version's map whose layout changed since: unpinned at start.
    const mapsDir = pinLayout(bpffs).mapsDir;
    mkdirSync(mapsDir, { recursive: true });
    const retired = nativeBpf.createMap({
      type: 'hash',
      name: 'sluice_fp_conns',
      keySize: 4,
      valueSize: 4,
      maxEntries: 1,
    });
    retired.pin(join(mapsDir, 'sluice_fp_conns_v1'));
    retired.close();
    const first = agentFastPath('all').fp;
    expect(existsSync(join(mapsDir, 'sluice_fp_conns_v1'))).toBe(false);
    const ids = () => linkPins().map((pin) => nativeBpf.openPinnedLink(pin).info?.().id);
    const before = ids();
    first.close();
    // The agent is gone: the pins keep the fast path working.
    expect(cgroupPrograms()).toContain('cgroup_sock_ops');

    const second = agentFastPath('all').fp;
    expect(second.linkEvents.map((e) => `${e.program}:${e.action}`).sort()).toEqual([
      'fp_msg:adopted',
      'fp_sockops:adopted',
    ]);
    expect(ids()).toEqual(before);
    const r = await xfer(OTHER_PORT);
    expect(r.ok).toBe(true);
    expect(second.poll()?.redirectedBytes).toBe(131072n);
    second.close();

    const result = uninstall(nativeBpf, { bpffsDir: bpffs });
    expect(result.detached.sort()).toEqual([...linkPins()].sort());
    for (const pin of linkPins()) expect(existsSync(pin)).toBe(false);
    expect(cgroupPrograms()).not.toContain('cgroup_sock_ops');
  });

  it('off attaches nothing, and switching off detaches what an earlier run left', async () => {
    const off = agentFastPath('off').fp;
    expect(off.mode).toBe('off');
    expect(off.fastPath).toBeUndefined();
    for (const pin of linkPins()) expect(existsSync(pin)).toBe(false);
    expect(cgroupPrograms()).toEqual([]);
    off.close();

    // An earlier run left the fast path on; the next one starts with --fastpath off.
    agentFastPath('all').fp.close();
    expect(cgroupPrograms()).toContain('cgroup_sock_ops');
    const next = agentFastPath('off').fp;
    expect(next.mode).toBe('off');
    for (const pin of linkPins()) expect(existsSync(pin)).toBe(false);
    expect(cgroupPrograms()).toEqual([]);
    // The pinned config says off, for sockets that joined under the old run.
    const config = nativeBpf.openPinnedMap(pinLayout(bpffs).mapPin(MAP_CONFIG));
    expect(FpConfigCodec.decode(config.lookup(Buffer.alloc(4))!).enabled).toBe(0);
    config.close();

    // And on again at run time, then off at run time.
    next.setMode('mesh');
    expect(next.mode).toBe('mesh');
    expect(cgroupPrograms()).toContain('cgroup_sock_ops');
    next.setMode('off');
    expect(cgroupPrograms()).toEqual([]);
  });

  it('a failed probe leaves it off with the reason', () => {
    const { fp } = agentFastPath('mesh', new Registry(), join(sandbox.bpffsDir, 'missing.bpf.o'));
    expect(fp.mode).toBe('off');
    expect(fp.unavailable).toMatch(/kernel feature probe failed: .*missing\.bpf\.o not built/);
    expect(cgroupPrograms()).toEqual([]);
  });

  it('sluice-agent --fastpath mesh: a standalone agent redirects to its node-local backend; uninstall removes it', async () => {
    const port = 18092;
    const file = join('/tmp', `sluice-fastpath-wiring-${sandbox.id}.yaml`);
    // JSON is YAML: the standalone catalog file.
    writeFileSync(
      file,
      JSON.stringify({
        domain: 'mesh.local',
        services: [
          {
            name: 'web',
            namespace: 'default',
            vip: '10.96.0.10',
            ports: [{ name: 'http', port: 80, targetPort: port, protocol: 'TCP' }],
            backends: [{ address: '127.0.0.1', node: 'node-a', weight: 1 }],
          },
        ],
      }),
    );
    const flags = ['--config', file, '--node', 'node-a', '--cgroup', sandbox.cgroupPath, '--bpffs', bpffs];
    const config = loadAgentConfig([
      ...flags,
      '--metrics',
      'off',
      '--dns',
      'off',
      '--log-level',
      'error',
      '--fastpath',
      'mesh',
    ]) as RunConfig;
    const running = await runAgent(config, { bpf: () => nativeBpf, logDestination: new PassThrough() }).catch(
      (error: unknown) => {
        rmSync(file, { force: true });
        throw error;
      },
    );
    try {
      expect(running.fastPath?.mode).toBe('mesh');
      expect(running.fastPath?.fastPath?.endpoints()).toEqual([{ ip: '127.0.0.1', port }]);
      const r = await xfer(port);
      expect(r.ok).toBe(true);
      running.fastPath?.poll();
      const text = await running.registry.metrics();
      expect(sample(text, 'sluice_fastpath_redirected_bytes_total')).toBe(131072);
      expect(sample(text, 'sluice_fastpath_mode{mode="mesh"}')).toBe(1);
    } finally {
      await running.stop();
      rmSync(file, { force: true });
    }
    // Stopped: the pins keep it attached until uninstall.
    for (const pin of linkPins()) expect(existsSync(pin)).toBe(true);
    const code = await main(
      ['uninstall', '--cgroup', sandbox.cgroupPath, '--bpffs', bpffs, '--log-level', 'error'],
      {
        bpf: () => nativeBpf,
        logDestination: new PassThrough(),
      },
    );
    expect(code).toBe(0);
    for (const pin of linkPins()) expect(existsSync(pin)).toBe(false);
    expect(cgroupPrograms()).toEqual([]);
  });
});
