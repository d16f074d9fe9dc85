/**
 * Controller mode over mTLS, with real processes in a sandbox netns (only lo, no route out): the controller
 * (bin/sluice-controller with --tls-*) and the agent (bin/sluice-agent with --tls-* and --state-dir)
 * on 127.0.0.1 inside the netns, real backends, client loops through the VIP from the sandbox cgroup.
 *
 * - An agent whose client certificate comes from another CA is refused and programs nothing; one with the
 *   cluster CA's certificate syncs and steers traffic.
 * - Restart while the controller is down: the agent is killed with -9, the controller stopped, the agent
 *   restarted; it applies its persisted catalog, and when a backend is then killed its own probes take the
 *   backend out of selection. The service has no outlierDetection, so the kernel never ejects: only the
 *   agent's active checks can move the traffic. Then the controller comes back and resyncs the agent.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, expect, it } from 'vitest';
import { makePki, type Pki } from '../support/pki';
import { describePrivileged } from '../support/privileged';
import { createSandbox, type Netns, type Sandbox } from '../support/sandbox';
import {
  type AgentProcess,
  msgIs,
  requireBuilt,
  sleep,
  startAgent,
  startBackend,
  startController,
  startLoop,
  writeCatalog,
} from './support';

const VIP = '10.96.0.30';
const LISTEN = '127.0.0.1:7700';
const INTERVAL_MS = 200;

let sandbox: Sandbox | undefined;
const dirs: string[] = [];
afterEach(async () => {
  await sandbox?.cleanup();
  sandbox = undefined;
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

interface Node {
  sb: Sandbox;
  ns: Netns;
  dir: string;
  pki: Pki;
  file: string;
  ports: Record<string, number>;
  kill: Record<string, () => void>;
}

async function node(label: string, names: string[]): Promise<Node> {
  sandbox = createSandbox(label);
  const sb = sandbox;
  const ns = sb.netns();
  const dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-tls-'));
  dirs.push(dir);
  const pki = makePki(dir);
  const ports: Record<string, number> = {};
  const kill: Record<string, () => void> = {};
  for (const [i, name] of names.entries()) {
    const backend = await startBackend(sb, ns, `127.0.1.${i + 1}`, name);
    ports[name] = backend.port;
    kill[name] = () => backend.child.kill('SIGKILL');
  }
  const file = join(dir, 'services.yaml');
  writeCatalog(file, {
    domain: 'mesh.local',
    services: [
      {
        name: 'web',
        namespace: 'default',
        vip: VIP,
        ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
        algorithm: 'random',
        healthCheck: {
          protocol: 'tcp',
          interval: `${INTERVAL_MS}ms`,
          timeout: '150ms',
          healthyThreshold: 2,
          unhealthyThreshold: 2,
        },
        // No outlierDetection: the kernel never ejects, so only active health checks move traffic.
        backends: names.map((name, i) => ({
          address: `127.0.1.${i + 1}`,
          port: ports[name],
          weight: 1,
          node: 'node-a',
        })),
      },
    ],
  });
  return { sb, ns, dir, pki, file, ports, kill };
}

async function controller(n: Node): Promise<AgentProcess> {
  const c = startController(n.sb, n.ns, ['--config', n.file, '--listen', LISTEN, ...n.pki.controllerFlags()]);
  await c.log.waitFor(msgIs('controller listening'), 15_000, 'controller listening');
  return c;
}

function agent(n: Node, client = 'node-a'): AgentProcess {
  return startAgent(n.sb, n.ns, [
    '--controller',
    LISTEN,
    '--node',
    'node-a',
    ...n.pki.agentFlags(client),
    '--state-dir',
    join(n.dir, 'state'),
  ]);
}

async function exit(p: AgentProcess, signal: NodeJS.Signals): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill(signal);
  await exited;
}

beforeAll(() => requireBuilt());

describePrivileged('controller mode over mTLS, end to end', () => {
  it('refuses an agent with a certificate from another CA; syncs and steers with the cluster CA', async () => {
    const n = await node('e2e-tls', ['a', 'b']);
    await controller(n);

    const intruder = agent(n, 'intruder');
    await intruder.log.waitFor(
      (l) => l.msg === 'controller disconnected' && /^UNAVAILABLE/.test(String(l.detail)),
      15_000,
      'refused by the controller',
    );
    // A few more back-off attempts, all refused.
    await sleep(1500);
    expect(intruder.log.count(msgIs('catalog applied'))).toBe(0);
    expect(intruder.log.count(msgIs('controller connected'))).toBe(0);
    await exit(intruder, 'SIGTERM');

    const a = agent(n);
    await a.log.waitFor(msgIs('catalog applied'), 20_000, 'catalog applied over mTLS');
    const summary = await startLoop(n.sb, n.ns, VIP, 80, 100, 0).done;
    expect(summary.errors).toEqual({});
    expect(summary.names.a).toBeGreaterThan(0);
    expect(summary.names.b).toBeGreaterThan(0);
  });

  it('restarted while the controller is down: applies the persisted catalog and moves traffic off a killed backend by its own probes', async () => {
    const n = await node('e2e-tls-restart', ['a', 'b', 'c']);
    const ctl = await controller(n);
    const first = agent(n);
    await first.log.waitFor(msgIs('catalog applied'), 20_000, 'catalog applied');
    await first.log.waitFor(msgIs('catalog persisted'), 10_000, 'catalog persisted');

    await exit(first, 'SIGKILL');
    await exit(ctl, 'SIGKILL');

    const second = agent(n);
    await second.log.waitFor(msgIs('adopted the pinned data plane'), 20_000, 'adoption');
    await second.log.waitFor(msgIs('persisted catalog applied'), 20_000, 'persisted catalog applied');
    // Probes run again: the live backends are seen healthy.
    await second.log.waitFor(
      (l) => l.msg === 'backend health changed' && l.to === 'healthy',
      10_000,
      'first probe results',
    );

    const loop = startLoop(n.sb, n.ns, VIP, 80, 400, 10);
    await sleep(1000);
    const killedAt = Date.now();
    n.kill.c!();
    const summary = await loop.done;
    const unhealthy = await second.log.waitFor(
      (l) => l.msg === 'backend health changed' && l.to === 'unhealthy',
      5_000,
      'c marked unhealthy',
    );
    expect(String(unhealthy.backend)).toContain(`127.0.1.3:${n.ports.c}`);
    expect(String(unhealthy.reason)).toMatch(/ECONNREFUSED|timeout/);
    expect(summary.names.a).toBeGreaterThan(0);
    expect(summary.names.b).toBeGreaterThan(0);
    // Nothing fails once interval × threshold has passed (plus slack for a loaded machine). Without the
    // persisted catalog nothing would probe c, and a third of these connects would keep failing.
    const loopStart = killedAt - 1000;
    const late = summary.events.filter(
      ([t, r]) => loopStart + t > killedAt + 2 * INTERVAL_MS + 1500 && r.startsWith('!'),
    );
    expect(late, JSON.stringify(summary.events.filter(([, r]) => r.startsWith('!')))).toEqual([]);
    expect(
      summary.events.filter(([t]) => loopStart + t > killedAt + 2 * INTERVAL_MS + 1500).length,
    ).toBeGreaterThan(50);
    expect(second.log.count(msgIs('controller connected'))).toBe(0);

    // The controller comes back: the agent resyncs from it (a new epoch, so a full snapshot).
    const appliedBefore = second.log.count(msgIs('catalog applied'));
    await controller(n);
    await second.log.waitFor(msgIs('controller connected'), 20_000, 'reconnected');
    const deadline = Date.now() + 15_000;
    while (second.log.count(msgIs('catalog applied')) === appliedBefore && Date.now() < deadline)
      await sleep(100);
    expect(second.log.count(msgIs('catalog applied'))).toBeGreaterThan(appliedBefore);
    const after = await startLoop(n.sb, n.ns, VIP, 80, 100, 0).done;
    expect(after.errors).toEqual({});
    expect(after.names.c ?? 0).toBe(0);
  }, 120_000);
});
