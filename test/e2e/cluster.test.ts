/**
 * A cluster on one machine: a controller and three agents. Each node is a netns with no route out, its
 * own cgroup and its own bpffs directory; a hub netns runs the controller and routes the nodes' backend
 * subnets (10.0.<n>.0/24) between them, so a connect in one node can land on a backend in another. VIPs
 * stay unroutable everywhere: only the nodes' cgroup hooks give them meaning.
 *
 * Scenarios: weighted spread across nodes; locality preference and fall-through; controller stopped →
 * traffic unaffected, restarted → resync; invalid catalog edit → never pushed, old state kept.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../support/privileged';
import { createSandbox, type Netns, type Sandbox } from '../support/sandbox';
import {
  type AgentProcess,
  LogTail,
  type LoopSummary,
  msgIs,
  ROOT,
  requireBuilt,
  sleep,
  startBackend,
  startController,
  writeCatalog,
} from './support';

const VIP = '10.96.0.20';
const LOCAL_VIP = '10.96.0.21';
const NODES = ['node-a', 'node-b', 'node-c'] as const;
type NodeName = (typeof NODES)[number];

interface ClusterNode {
  name: NodeName;
  ns: Netns;
  cgroup: string;
  bpffs: string;
  /** 10.0.<n>.11 */
  backendAddress: string;
  backend?: ChildProcess;
  agent?: AgentProcess;
}

interface Cluster {
  sb: Sandbox;
  hub: Netns;
  nodes: Record<NodeName, ClusterNode>;
  file: string;
  controllerAddress: string;
  controller?: AgentProcess;
}

function spawnInNode(c: Cluster, node: ClusterNode, argv: string[], inCgroup: boolean): ChildProcess {
  const inNs = ['nsenter', `--net=/run/netns/${node.ns.name}`, ...argv];
  const full = inCgroup
    ? ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', node.cgroup, ...inNs]
    : inNs;
  return c.sb.spawn(full);
}

function startAgentIn(c: Cluster, node: ClusterNode, zone: string): AgentProcess {
  const child = spawnInNode(
    c,
    node,
    [
      process.execPath,
      join(ROOT, 'bin/sluice-agent'),
      '--controller',
      c.controllerAddress,
      // The hub's address is not loopback: plaintext needs saying so (test/e2e/controller-tls.test.ts
      // covers mTLS).
      '--insecure',
      '--state-dir',
      join('/tmp', `sluice-e2e-${c.sb.id}-state`, node.name),
      '--node',
      node.name,
      '--zone',
      zone,
      '--cgroup',
      node.cgroup,
      '--bpffs',
      node.bpffs,
      '--metrics',
      '127.0.0.1:0',
      '--dns',
      'off',
    ],
    false,
  );
  return { child, log: new LogTail(child) };
}

function loop(
  c: Cluster,
  node: ClusterNode,
  vip: string,
  count: number,
  intervalMs: number,
): Promise<LoopSummary> {
  const child = spawnInNode(
    c,
    node,
    [
      process.execPath,
      join(ROOT, 'test/fixtures/connect-loop.js'),
      vip,
      '80',
      String(count),
      String(intervalMs),
    ],
    true,
  );
  const log = new LogTail(child);
  return log
    .waitFor((l) => 'names' in l, 10_000 + count * (intervalMs + 2_100), 'loop summary')
    .then((l) => l as unknown as LoopSummary);
}

function catalog(c: Cluster, webWeights: Record<NodeName, number>, extra: { badWeight?: boolean } = {}) {
  const healthCheck = {
    protocol: 'tcp',
    interval: '200ms',
    timeout: '150ms',
    healthyThreshold: 2,
    unhealthyThreshold: 2,
  };
  return {
    domain: 'mesh.local',
    services: [
      {
        name: 'web',
        namespace: 'default',
        vip: VIP,
        ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
        algorithm: 'weighted',
        healthCheck,
        backends: NODES.filter((n) => webWeights[n] > 0).map((n, i) => ({
          address: c.nodes[n].backendAddress,
          weight: extra.badWeight && i === 0 ? 70000 : webWeights[n],
          node: n,
          zone: n === 'node-c' ? 'zone-2' : 'zone-1',
        })),
      },
      {
        name: 'local',
        namespace: 'default',
        vip: LOCAL_VIP,
        ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
        algorithm: 'random',
        trafficDistribution: 'PreferNode',
        healthCheck,
        backends: NODES.map((n) => ({
          address: c.nodes[n].backendAddress,
          weight: 1,
          node: n,
          zone: n === 'node-c' ? 'zone-2' : 'zone-1',
        })),
      },
    ],
  };
}

async function buildCluster(): Promise<Cluster> {
  const sb = createSandbox('e2e-cluster');
  const hub = sb.netns();
  hub.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  const nodes = {} as Record<NodeName, ClusterNode>;
  for (const [i, name] of NODES.entries()) {
    const n = i + 1;
    const ns = sb.netns();
    // hub 10.0.100.(4n+1) <-> node 10.0.100.(4n+2); the node's backends live on 10.0.n.0/24.
    const hubAddr = `10.0.100.${4 * n + 1}`;
    const nodeAddr = `10.0.100.${4 * n + 2}`;
    const pair = sb.veth(hub, ns, `${hubAddr}/30`, `${nodeAddr}/30`);
    void pair;
    ns.addLoopbackAddress(`10.0.${n}.11/32`);
    ns.exec(['ip', 'route', 'add', '10.0.0.0/16', 'via', hubAddr]);
    hub.exec(['ip', 'route', 'add', `10.0.${n}.0/24`, 'via', nodeAddr]);
    const cgroup = sb.childCgroup(name);
    const bpffs = join(sb.bpffsDir, name);
    mkdirSync(bpffs, { recursive: true });
    nodes[name] = { name, ns, cgroup, bpffs, backendAddress: `10.0.${n}.11` };
  }
  const file = join('/tmp', `sluice-e2e-${sb.id}.yaml`);
  // The controller listens on the hub's first address, which every node reaches through its veth.
  const c: Cluster = { sb, hub, nodes, file, controllerAddress: '10.0.100.5:7700' };
  for (const node of Object.values(nodes)) {
    node.backend = (await startBackend(sb, node.ns, node.backendAddress, node.name, 8080)).child;
  }
  writeCatalog(file, catalog(c, { 'node-a': 3, 'node-b': 1, 'node-c': 0 }));
  c.controller = startController(sb, hub, ['--config', file, '--listen', c.controllerAddress, '--insecure']);
  await c.controller.log.waitFor(msgIs('controller listening'), 15_000, 'controller listening');
  for (const node of Object.values(nodes)) {
    node.agent = startAgentIn(c, node, node.name === 'node-c' ? 'zone-2' : 'zone-1');
  }
  for (const node of Object.values(nodes)) {
    await node.agent!.log.waitFor(msgIs('catalog applied'), 20_000, `${node.name} catalog applied`);
  }
  return c;
}

function share(names: Record<string, number>, name: string): number {
  const total = Object.values(names).reduce((a, b) => a + b, 0);
  return total === 0 ? 0 : (names[name] ?? 0) / total;
}

let cluster: Cluster | undefined;

describePrivileged('cluster of three nodes, end to end', () => {
  beforeAll(async () => {
    requireBuilt();
    cluster = await buildCluster();
  }, 90_000);
  afterAll(async () => {
    if (process.env.SLUICE_E2E_DEBUG)
      console.log(cluster?.nodes['node-c'].agent?.log.raw.slice(-40).join('\n'));
    await cluster?.sb.cleanup();
    if (cluster) rmSync(cluster.file, { force: true });
    if (cluster) rmSync(join('/tmp', `sluice-e2e-${cluster.sb.id}-state`), { recursive: true, force: true });
  });

  it('spreads a service by weight across nodes', async () => {
    const c = cluster!;
    const summary = await loop(c, c.nodes['node-c'], VIP, 400, 0);
    expect(summary.errors).toEqual({});
    expect(Object.keys(summary.names).sort()).toEqual(['node-a', 'node-b']);
    expect(share(summary.names, 'node-a')).toBeGreaterThan(0.67);
    expect(share(summary.names, 'node-a')).toBeLessThan(0.83);
  });

  it('prefers the node-local backend and falls through when it is unhealthy', async () => {
    const c = cluster!;
    const local = await loop(c, c.nodes['node-a'], LOCAL_VIP, 50, 0);
    expect(local).toMatchObject({ names: { 'node-a': 50 }, errors: {} });
    const fromB = await loop(c, c.nodes['node-b'], LOCAL_VIP, 50, 0);
    expect(fromB).toMatchObject({ names: { 'node-b': 50 }, errors: {} });

    // node-a's backend dies: its agent's probes mark it unhealthy, node-a falls through to all nodes.
    c.nodes['node-a'].backend!.kill('SIGKILL');
    await c.nodes['node-a'].agent!.log.waitFor(
      (l) => l.msg === 'backend health changed' && l.to === 'unhealthy',
      10_000,
      'node-a backend unhealthy',
    );
    await sleep(300);
    const after = await loop(c, c.nodes['node-a'], LOCAL_VIP, 200, 0);
    expect(after.errors).toEqual({});
    expect(after.names['node-a']).toBeUndefined();
    // PreferNode: node → zone → all. node-b shares node-a's zone, so the zone tier takes over (node-c is
    // in zone-2 and stays out while zone-1 has a healthy backend).
    expect(Object.keys(after.names).sort()).toEqual(['node-b']);
    // The controller merges node-a's report and pushes it: node-c, which does not probe node-a's backend,
    // stops choosing it too (through health, without failing connects once it has the update).
    const deadline = Date.now() + 10_000;
    let fromC: LoopSummary;
    do {
      await sleep(200);
      fromC = await loop(c, c.nodes['node-c'], VIP, 40, 0);
    } while (
      (fromC.names['node-a'] !== undefined || Object.keys(fromC.errors).length > 0) &&
      Date.now() < deadline
    );
    expect(fromC).toMatchObject({ names: { 'node-b': 40 }, errors: {} });
    // Other nodes keep their own backend.
    const stillB = await loop(c, c.nodes['node-b'], LOCAL_VIP, 30, 0);
    expect(stillB).toMatchObject({ names: { 'node-b': 30 }, errors: {} });

    // It comes back: node-a prefers it again.
    c.nodes['node-a'].backend = (
      await startBackend(c.sb, c.nodes['node-a'].ns, c.nodes['node-a'].backendAddress, 'node-a', 8080)
    ).child;
    await c.nodes['node-a'].agent!.log.waitFor(
      (l) => l.msg === 'backend health changed' && l.to === 'healthy' && l.from === 'unhealthy',
      10_000,
      'node-a backend healthy again',
    );
    await sleep(300);
    const back = await loop(c, c.nodes['node-a'], LOCAL_VIP, 30, 0);
    expect(back).toMatchObject({ names: { 'node-a': 30 }, errors: {} });
  });

  it('never pushes an invalid catalog edit: agents keep the old state', async () => {
    const c = cluster!;
    const applied = (n: NodeName) => c.nodes[n].agent!.log.count(msgIs('catalog applied'));
    const before = NODES.map(applied);
    writeCatalog(c.file, catalog(c, { 'node-a': 1, 'node-b': 3, 'node-c': 0 }, { badWeight: true }));
    await c.controller!.log.waitFor(
      (l) => typeof l.msg === 'string' && /invalid/i.test(l.msg),
      10_000,
      'controller reports the invalid catalog',
    );
    await sleep(1000);
    expect(NODES.map(applied)).toEqual(before);
    const summary = await loop(c, c.nodes['node-c'], VIP, 200, 0);
    expect(summary.errors).toEqual({});
    expect(share(summary.names, 'node-a')).toBeGreaterThan(0.6);
  });

  it('keeps traffic flowing while the controller is down, and resyncs when it is back', async () => {
    const c = cluster!;
    const exited = new Promise((r) => c.controller!.child.once('exit', r));
    c.controller!.child.kill('SIGKILL');
    await exited;
    await c.nodes['node-c'].agent!.log.waitFor(
      (l) => l.msg === 'controller disconnected',
      10_000,
      'node-c sees the controller go',
    );
    const during = await loop(c, c.nodes['node-c'], VIP, 200, 5);
    expect(during.errors).toEqual({});
    expect(share(during.names, 'node-a')).toBeGreaterThan(0.6);

    // A fixed catalog with flipped weights, then the controller comes back and every agent resyncs to it.
    writeCatalog(c.file, catalog(c, { 'node-a': 1, 'node-b': 3, 'node-c': 0 }));
    const appliedBefore = c.nodes['node-c'].agent!.log.count(msgIs('catalog applied'));
    c.controller = startController(c.sb, c.hub, [
      '--config',
      c.file,
      '--listen',
      c.controllerAddress,
      '--insecure',
    ]);
    await c.controller.log.waitFor(msgIs('controller listening'), 15_000, 'controller listening again');
    const deadline = Date.now() + 20_000;
    while (
      c.nodes['node-c'].agent!.log.count(msgIs('catalog applied')) === appliedBefore &&
      Date.now() < deadline
    ) {
      await sleep(100);
    }
    expect(c.nodes['node-c'].agent!.log.count(msgIs('catalog applied'))).toBeGreaterThan(appliedBefore);
    const after = await loop(c, c.nodes['node-c'], VIP, 400, 0);
    expect(after.errors).toEqual({});
    expect(share(after.names, 'node-b')).toBeGreaterThan(0.67);
  });

  it('keeps every connect working while an agent in controller mode is killed with -9 and restarted', async () => {
    const c = cluster!;
    const node = c.nodes['node-c'];
    const running = loop(c, node, VIP, 300, 10);
    await sleep(700);
    const exited = new Promise((r) => node.agent!.child.once('exit', r));
    node.agent!.child.kill('SIGKILL');
    await exited;
    await sleep(300);
    node.agent = startAgentIn(c, node, 'zone-2');
    await node.agent.log.waitFor(msgIs('adopted the pinned data plane'), 20_000, 'adoption');
    await node.agent.log.waitFor(msgIs('catalog applied'), 20_000, 'resync after restart');
    const summary = await running;
    expect(summary.errors).toEqual({});
    expect(Object.keys(summary.names).sort()).toEqual(['node-a', 'node-b']);
  });
});
