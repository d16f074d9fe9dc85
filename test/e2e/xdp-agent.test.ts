/**
 * The agent runs the XDP load balancer for a service's external IP (`--xdp-interface`): a real agent
 * process in the "node" namespace of the XDP veth topology (test/support/xdp-topology.ts, no route out),
 * standalone with a catalog file. Real TCP connections from the client namespace to the external IP reach
 * the backends by direct server return, spread by weight; the counters show up as Prometheus metrics; a
 * restarted agent adopts the pinned link (the interface never runs without the balancer and a live
 * connection keeps its backend); an agent started without the flag detaches it.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, expect, it } from 'vitest';
import { XDP_DECAP_PROGRAM, XDP_LB_OBJECT, XDP_PASS_PROGRAM } from '../../agent/abi/xdp';
import { type BpfObject, bpf, type XdpLink } from '../../native/index';
import { firstLine } from '../support/child-output';
import { describePrivileged } from '../support/privileged';
import { createSandbox, type Sandbox } from '../support/sandbox';
import {
  BACKEND_SERVER,
  backendAddr,
  buildXdpTopology,
  CLIENT_SCRIPT,
  VIP as EXTERNAL_IP,
  LONG_CLIENT_SCRIPT,
  VIP_PORT,
} from '../support/xdp-topology';
import { fetchInNetns, metricsUrl, msgIs, ROOT, requireBuilt, startAgent, writeCatalog } from './support';

const WEIGHTS = [1, 2, 3];
const COUNT = 120;

let sandbox: Sandbox | undefined;
let helperObject: BpfObject | undefined;
/** Held until the end: a link closed (or garbage-collected) detaches its program. */
const helperLinks: XdpLink[] = [];
const files: string[] = [];
afterEach(async () => {
  for (const link of helperLinks.splice(0)) link.close();
  helperObject?.close();
  helperObject = undefined;
  await sandbox?.cleanup();
  sandbox = undefined;
  for (const file of files.splice(0)) rmSync(file, { force: true });
});

interface ConnResult {
  port: number;
  backend?: string;
  ok: boolean;
  error?: string;
}

/** The value of one sample in Prometheus text, or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describePrivileged('agent with --xdp-interface: external IPs balanced in XDP', () => {
  beforeAll(requireBuilt);

  it('balances an external IP by weight, survives its own restart, and detaches when the flag goes', async () => {
    sandbox = createSandbox('xdp-agent');
    const sb = sandbox;
    const topo = buildXdpTopology(sb, WEIGHTS.length);

    // The backends' side of direct server return (docs/xdp.md): decapsulation on their veth (this kernel
    // has no ipip module, so the program's xdp_decap stands in for an ipip device), the external IP on lo,
    // a server that names itself. The router's port needs an XDP program for veth XDP_TX to deliver.
    const helperPins = join(sb.bpffsDir, 'test-helper');
    mkdirSync(helperPins, { recursive: true });
    helperObject = bpf.loadObject(join(ROOT, 'build/bpf', XDP_LB_OBJECT), { pinRoot: helperPins });
    for (const [i, backend] of topo.backends.entries()) {
      helperLinks.push(
        helperObject
          .program(XDP_DECAP_PROGRAM)
          .attachXdp(backend.ifindex(topo.backendLinks[i]!), 'auto', { netns: backend.name }),
      );
      const server = sb.spawn(
        [process.execPath, '-e', BACKEND_SERVER, `backend${i}`, EXTERNAL_IP, String(VIP_PORT)],
        { netns: backend },
      );
      expect(JSON.parse(await firstLine(server, 10_000))).toEqual({ listening: true });
    }
    helperLinks.push(
      helperObject
        .program(XDP_PASS_PROGRAM)
        .attachXdp(topo.router.ifindex(topo.routerNodePort), 'auto', { netns: topo.router.name }),
    );

    const file = join('/tmp', `sluice-xdp-agent-${sb.id}.yaml`);
    files.push(file);
    writeCatalog(file, {
      services: [
        {
          name: 'web',
          vip: '10.96.0.20',
          externalIPs: [EXTERNAL_IP],
          ports: [{ port: VIP_PORT }],
          backends: WEIGHTS.map((weight, i) => ({ address: backendAddr(i), weight })),
        },
      ],
    });
    const agentBpffs = join(sb.bpffsDir, 'agent');
    const xdpFlags = ['--xdp-interface', topo.nodeLink];
    const first = startAgent(sb, topo.node, ['--config', file, ...xdpFlags], agentBpffs);
    const on = await first.log.waitFor(msgIs('xdp load balancer on'), 20_000);
    expect(['native', 'generic']).toContain(on.mode);
    await first.log.waitFor(msgIs('xdp service set'), 20_000);

    // The node does not forward: only the XDP program can get a packet to a backend.
    expect(topo.node.exec(['sysctl', '-n', 'net.ipv4.ip_forward']).trim()).toBe('0');
    const run = async (count: number, firstPort: number): Promise<ConnResult[]> => {
      const client = sb.spawn(
        [
          process.execPath,
          '-e',
          CLIENT_SCRIPT,
          EXTERNAL_IP,
          String(VIP_PORT),
          String(count),
          String(firstPort),
          '200',
        ],
        { netns: topo.client },
      );
      return JSON.parse(await firstLine(client, 60_000)) as ConnResult[];
    };
    const results = await run(COUNT, 42_000);
    expect(results.filter((r) => !r.ok)).toEqual([]);
    const total = WEIGHTS.reduce((a, b) => a + b, 0);
    WEIGHTS.forEach((weight, i) => {
      const share = results.filter((r) => r.backend === `backend${i}`).length / COUNT;
      expect(Math.abs(share - weight / total), `backend${i}: ${share}`).toBeLessThan(0.12);
    });

    // Prometheus: the external IP's packets and the verdicts, from the kernel's counters.
    const url = await metricsUrl(first.log);
    await new Promise((r) => setTimeout(r, 1_200));
    const text = fetchInNetns(topo.node, url);
    expect(sample(text, `sluice_xdp_mode{mode="${String(on.mode)}"}`)).toBe(1);
    const vipPackets =
      sample(text, `sluice_xdp_vip_packets_total{vip="${EXTERNAL_IP}",port="${VIP_PORT}",protocol="tcp"}`) ??
      0;
    expect(vipPackets).toBeGreaterThanOrEqual(COUNT * 3);
    expect(
      sample(text, 'sluice_xdp_packets_total{reason="tx_new_flow",verdict="tx"}'),
    ).toBeGreaterThanOrEqual(COUNT);

    // sluicectl lists the balancer's link with the cgroup ones.
    const status = JSON.parse(
      execFileSync(
        process.execPath,
        [join(ROOT, 'bin/sluicectl'), 'status', '--json', '--bpffs', agentBpffs],
        {
          encoding: 'utf8',
        },
      ),
    ) as { links: { attachedTo: string; object: string }[] };
    expect(status.links).toContainEqual(
      expect.objectContaining({ attachedTo: `interface ${topo.nodeLink}`, object: 'xdp_lb' }),
    );

    // A live connection across an agent restart: SIGTERM leaves the pinned link in place, the next
    // agent swaps its program into that link.
    const long = sb.spawn([process.execPath, '-e', LONG_CLIENT_SCRIPT, EXTERNAL_IP, String(VIP_PORT)], {
      netns: topo.client,
    });
    const greeting = JSON.parse(await firstLine(long, 10_000)) as { backend: string };
    const lines: string[] = [];
    long.stdout?.on('data', (chunk: Buffer) => lines.push(...chunk.toString().split('\n').filter(Boolean)));
    const echo = async (text: string) => {
      const before = lines.length;
      long.stdin?.write(`${text}\n`);
      for (let i = 0; i < 100 && lines.length === before; i++) await new Promise((r) => setTimeout(r, 50));
      return lines.slice(before);
    };
    first.child.kill('SIGTERM');
    await new Promise((r) => first.child.once('exit', r));
    const linkWhileDown = JSON.parse(
      topo.node.exec(['ip', '-j', '-d', 'link', 'show', 'dev', topo.nodeLink]),
    )[0];
    expect(
      linkWhileDown.xdp?.prog?.id,
      'the balancer stays attached while the agent is down',
    ).toBeGreaterThan(0);
    expect(await echo('while the agent is down')).toEqual(['{"echo":true}']);

    const second = startAgent(sb, topo.node, ['--config', file, ...xdpFlags], agentBpffs);
    await second.log.waitFor(msgIs('xdp: adopted the pinned link'), 20_000);
    await second.log.waitFor(msgIs('xdp load balancer on'), 20_000);
    expect(await echo('after the restart')).toEqual(['{"echo":true}']);
    const again = await run(30, 43_000);
    expect(again.filter((r) => !r.ok)).toEqual([]);
    expect(greeting.backend).toMatch(/^backend\d$/);
    long.kill('SIGTERM');

    // The external IP leaves the catalog: the agent deletes it from the balancer's VIP map.
    const vipEntries = () =>
      (
        JSON.parse(
          execFileSync(
            'bpftool',
            ['-j', 'map', 'dump', 'pinned', join(agentBpffs, 'maps', 'sluice_xdp_vips_v1')],
            {
              encoding: 'utf8',
            },
          ),
        ) as unknown[]
      ).length;
    expect(vipEntries()).toBe(1);
    const applied = second.log.count(msgIs('catalog applied'));
    writeCatalog(file, {
      services: [
        {
          name: 'web',
          vip: '10.96.0.20',
          ports: [{ port: VIP_PORT }],
          backends: WEIGHTS.map((weight, i) => ({ address: backendAddr(i), weight })),
        },
      ],
    });
    await second.log.waitFor(
      () => second.log.count(msgIs('catalog applied')) > applied,
      20_000,
      'the catalog without the external IP applied',
    );
    expect(vipEntries()).toBe(0);

    // Without the flag, the next agent detaches the balancer an earlier run left.
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));
    const third = startAgent(sb, topo.node, ['--config', file], agentBpffs);
    await third.log.waitFor(msgIs('xdp off: links of an earlier run detached'), 20_000);
    const linkAfter = JSON.parse(topo.node.exec(['ip', '-j', '-d', 'link', 'show', 'dev', topo.nodeLink]))[0];
    expect(linkAfter.xdp).toBeUndefined();
    third.child.kill('SIGTERM');
    await new Promise((r) => third.child.once('exit', r));
  }, 120_000);
});
