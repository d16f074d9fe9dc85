/**
 * One node, standalone mode: a real agent process (bin/sluice-agent --config) in a netns with no route out,
 * attached to the sandbox cgroup, real backend servers, and client loops through the VIP from inside the
 * cgroup. Scenarios: weighted spread and a live weight change; an invalid edit never applied; a backend
 * killed; the agent killed with -9 mid-loop; SIGTERM keeps the data plane and uninstall removes it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, expect, it } from 'vitest';
import { startEchoServer } from '../fixtures/tcp';
import { describePrivileged } from '../support/privileged';
import { createSandbox, type Netns, type Sandbox } from '../support/sandbox';
import {
  type AgentProcess,
  fetchInNetns,
  LogTail,
  metricsUrl,
  msgIs,
  ROOT,
  requireBuilt,
  sleep,
  startAgent,
  startBackend,
  startLoop,
  writeCatalog,
} from './support';

const VIP = '10.96.0.10';

let sandbox: Sandbox | undefined;
const files: string[] = [];
afterEach(async () => {
  await sandbox?.cleanup();
  sandbox = undefined;
  for (const file of files.splice(0)) rmSync(file, { force: true });
});

interface Node {
  sb: Sandbox;
  ns: Netns;
  file: string;
  ports: Record<string, number>;
  kill: Record<string, () => void>;
}

/** A node with backends named a, b, c... on 127.0.1.1, 127.0.1.2, ... */
async function node(label: string, names: string[]): Promise<Node> {
  sandbox = createSandbox(label);
  const sb = sandbox;
  const ns = sb.netns();
  const ports: Record<string, number> = {};
  const kill: Record<string, () => void> = {};
  for (const [i, name] of names.entries()) {
    const backend = await startBackend(sb, ns, `127.0.1.${i + 1}`, name);
    ports[name] = backend.port;
    kill[name] = () => backend.child.kill('SIGKILL');
  }
  // The catalog file lives beside the pins' parent, in a plain directory of the sandbox run.
  const file = join('/tmp', `sluice-e2e-${sb.id}.yaml`);
  files.push(file);
  return { sb, ns, file, ports, kill };
}

function catalog(n: Node, weights: Record<string, number>, extra: Record<string, unknown> = {}) {
  return {
    domain: 'mesh.local',
    services: [
      {
        name: 'web',
        namespace: 'default',
        vip: VIP,
        ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
        algorithm: 'weighted',
        healthCheck: {
          protocol: 'tcp',
          interval: '200ms',
          timeout: '150ms',
          healthyThreshold: 2,
          unhealthyThreshold: 2,
        },
        outlierDetection: { consecutiveFailures: 3, baseEjectionTime: '5s', maxEjectionPercent: 50 },
        backends: Object.entries(weights).map(([name, weight]) => ({
          address: `127.0.1.${Object.keys(n.ports).indexOf(name) + 1}`,
          port: n.ports[name],
          weight,
        })),
        ...extra,
      },
    ],
  };
}

async function agent(n: Node, dns = 'off'): Promise<AgentProcess> {
  const a = startAgent(n.sb, n.ns, ['--config', n.file, '--node', 'node-a'], n.sb.bpffsDir, dns);
  await a.log.waitFor(msgIs('catalog applied'), 20_000, 'catalog applied');
  return a;
}

function share(names: Record<string, number>, name: string): number {
  const total = Object.values(names).reduce((a, b) => a + b, 0);
  return (names[name] ?? 0) / total;
}

beforeAll(() => requireBuilt());

describePrivileged('standalone agent, end to end', () => {
  it('spreads by weight, applies a weight change, and never applies an invalid edit', async () => {
    const n = await node('e2e-weights', ['a', 'b']);
    writeCatalog(n.file, catalog(n, { a: 3, b: 1 }));
    const a = await agent(n, '127.0.0.1:0');

    // The DNS responder answers for the catalog, asked with a real resolver.
    const dnsPort = (await a.log.waitFor(msgIs('dns listening'))).port as number;
    const answer = execFileSync(
      'nsenter',
      [
        `--net=/run/netns/${n.ns.name}`,
        'dig',
        '+short',
        '+time=2',
        '+tries=1',
        '@127.0.0.1',
        '-p',
        String(dnsPort),
        'web.default.svc.mesh.local',
        'A',
      ],
      { encoding: 'utf8' },
    );
    expect(answer.trim()).toBe(VIP);

    const first = await startLoop(n.sb, n.ns, VIP, 80, 400, 0).done;
    expect(first.errors).toEqual({});
    // The kernel's counters reach the agent's metrics (polled every 500 ms).
    await sleep(1200);
    const metrics = fetchInNetns(n.ns, await metricsUrl(a.log));
    const connects = (name: string) =>
      Number(
        metrics.match(
          new RegExp(
            `sluice_backend_connects_total\\{service="default/web",backend="127\\.0\\.1\\.${name === 'a' ? 1 : 2}:${n.ports[name]}"\\} (\\d+)`,
          ),
        )?.[1],
      );
    expect(connects('a') + connects('b')).toBeGreaterThanOrEqual(400);
    expect(connects('a')).toBe(first.names.a);
    expect(metrics).toMatch(/sluice_map_entries\{map="sluice_lb_services_v2"\} 1/);
    expect(metrics).toMatch(/sluice_controller_connection_state\{state="standalone"\} 1/);
    // 3:1 → 75% ± 8 points (about 3.7 standard deviations of 400 draws).
    expect(share(first.names, 'a')).toBeGreaterThan(0.67);
    expect(share(first.names, 'a')).toBeLessThan(0.83);

    // An invalid edit: logged with its path and reason, never applied.
    const bad = catalog(n, { a: 1, b: 3 });
    (bad.services[0]!.backends[1] as { weight: number }).weight = -1;
    writeCatalog(n.file, bad);
    const invalid = await a.log.waitFor(
      (l) => typeof l.msg === 'string' && l.msg.startsWith('catalog file is invalid'),
    );
    expect(JSON.stringify(invalid.errors)).toContain('services[0].backends[1].weight');
    const still = await startLoop(n.sb, n.ns, VIP, 80, 200, 0).done;
    expect(still.errors).toEqual({});
    expect(share(still.names, 'a')).toBeGreaterThan(0.6);
    expect(a.log.count(msgIs('catalog applied'))).toBe(1);

    // A valid edit flips the weights.
    writeCatalog(n.file, catalog(n, { a: 1, b: 3 }));
    await a.log.waitFor((l) => l.msg === 'catalog applied' && l.version === '2', 15_000, 'version 2 applied');
    const second = await startLoop(n.sb, n.ns, VIP, 80, 400, 0).done;
    expect(second.errors).toEqual({});
    expect(share(second.names, 'b')).toBeGreaterThan(0.67);
    expect(share(second.names, 'b')).toBeLessThan(0.83);
  });

  it('moves traffic off a killed backend within probe interval × threshold, failing at most the ejection threshold', async () => {
    const n = await node('e2e-kill-backend', ['a', 'b', 'c']);
    writeCatalog(n.file, catalog(n, { a: 1, b: 1, c: 1 }));
    const a = await agent(n);
    const loop = startLoop(n.sb, n.ns, VIP, 80, 300, 10);
    await sleep(1000);
    const killedAt = Date.now();
    n.kill.c!();
    const summary = await loop.done;
    const failed = Object.entries(summary.errors)
      .filter(([code]) => !code.startsWith('established:'))
      .reduce((x, [, y]) => x + y, 0);
    if (process.env.SLUICE_E2E_DEBUG)
      console.log('killed backend: failed connects', summary.errors, summary.names);
    if (failed > 0) {
      // Failed connects came before the probes noticed: the kernel ejected c, and the agent says so.
      const ejected = await a.log.waitFor(msgIs('kernel ejected backend'), 5_000, 'kernel ejection logged');
      expect(ejected.backend).toBe(`127.0.1.3:${n.ports.c}`);
      expect(String(ejected.reason)).toContain('consecutive failed connects');
    }
    // The kernel ejects after 3 consecutive failed connects (outlierDetection.consecutiveFailures).
    expect(failed, JSON.stringify(summary.errors)).toBeLessThanOrEqual(3);
    expect(summary.names.a).toBeGreaterThan(0);
    expect(summary.names.b).toBeGreaterThan(0);
    // Active checks: 2 failed probes 200 ms apart take c out of selection; the agent logs why.
    const unhealthy = await a.log.waitFor((l) => l.msg === 'backend health changed' && l.to === 'unhealthy');
    expect(String(unhealthy.reason)).toMatch(/ECONNREFUSED|timeout/);
    expect(String(unhealthy.backend)).toContain(`127.0.1.3:${n.ports.c}`);
    // Nothing fails once interval × threshold has passed (plus slack for a loaded machine).
    const loopStart = killedAt - 1000;
    const late = summary.events.filter(
      ([t, r]) => loopStart + t > killedAt + 2 * 200 + 1500 && r.startsWith('!'),
    );
    expect(late, JSON.stringify(summary.events.filter(([, r]) => r.startsWith('!')))).toEqual([]);
  });

  it('keeps existing connections and every new connect working while the agent is killed with -9 and restarted', async () => {
    const n = await node('e2e-kill-agent', ['a', 'b']);
    // A second service for a long-lived connection: an echo server behind 10.96.0.11:7.
    const echo = await startEchoServer(n.sb, { netns: n.ns, host: '127.0.2.1' });
    const withEcho = catalog(n, { a: 1, b: 1 });
    withEcho.services.push({
      ...withEcho.services[0]!,
      name: 'echo',
      vip: '10.96.0.11',
      ports: [{ name: 'echo', port: 7, targetPort: echo.port, protocol: 'TCP' }],
      backends: [{ address: '127.0.2.1', port: echo.port, weight: 1 }],
    });
    writeCatalog(n.file, withEcho);
    const first = await agent(n);
    const held = n.sb.spawn(
      [process.execPath, join(ROOT, 'test/fixtures/hold-client.js'), '10.96.0.11', '7', '4'],
      {
        netns: n.ns,
        inCgroup: true,
      },
    );
    const heldResult = new LogTail(held).waitFor((l) => 'sent' in l, 15_000, 'hold-client result');
    const loop = startLoop(n.sb, n.ns, VIP, 80, 300, 10);
    await sleep(700);
    first.child.kill('SIGKILL');
    await sleep(500);
    const second = await agent(n);
    await second.log.waitFor(msgIs('adopted the pinned data plane'));
    const summary = await loop.done;
    expect(summary.errors).toEqual({});
    expect(summary.names.a).toBeGreaterThan(0);
    expect(summary.names.b).toBeGreaterThan(0);
    // The connection opened before the kill kept echoing through it and after the restart.
    const kept = await heldResult;
    expect(kept.error).toBeUndefined();
    expect(kept).toMatchObject({ sent: 40, echoed: 40, remoteAddress: '10.96.0.11' });
  });

  it('leaves the data plane in place on SIGTERM; uninstall removes every program and pin', async () => {
    const n = await node('e2e-sigterm', ['a']);
    writeCatalog(n.file, catalog(n, { a: 1 }));
    const a = await agent(n);
    const exited = new Promise((r) => a.child.once('exit', r));
    a.child.kill('SIGTERM');
    await exited;
    const after = await startLoop(n.sb, n.ns, VIP, 80, 20, 0).done;
    expect(after.errors).toEqual({});
    expect(after.names.a).toBe(20);

    execFileSync(process.execPath, [
      join(ROOT, 'bin/sluice-agent'),
      'uninstall',
      '--cgroup',
      n.sb.cgroupPath,
      '--bpffs',
      n.sb.bpffsDir,
    ]);
    const attached = execFileSync('bpftool', ['-j', 'cgroup', 'show', n.sb.cgroupPath], {
      encoding: 'utf8',
    }).trim();
    expect(attached === '' ? [] : JSON.parse(attached)).toEqual([]);
    expect(existsSync(n.sb.bpffsDir)).toBe(false);
    // Without translation the VIP is just an address with no route in this netns.
    const gone = await startLoop(n.sb, n.ns, VIP, 80, 1, 0).done;
    expect(Object.keys(gone.errors)).toEqual(['ENETUNREACH']);
  });
});
