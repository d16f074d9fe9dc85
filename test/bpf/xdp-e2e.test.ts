import { resolve } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { XDP_DECAP_PROGRAM, XDP_PASS_PROGRAM } from '../../agent/abi/xdp';
import { XdpLoadBalancer, type XdpLogger } from '../../agent/xdp/datapath';
import { maglevSlot } from '../../agent/xdp/flow-hash';
import { bpf, type XdpLink } from '../../native/index';
import { firstLine } from '../support/child-output';
import { describePrivileged } from '../support/privileged';
import { useSandbox } from '../support/sandbox';
import {
  BACKEND_SERVER,
  backendAddr,
  buildXdpTopology,
  CLIENT_ADDR,
  CLIENT_SCRIPT,
  LONG_CLIENT_SCRIPT,
  NODE_ADDR,
  VIP,
  VIP_PORT,
} from '../support/xdp-topology';

const OBJECT_DIR = resolve(__dirname, '../../build/bpf');
const SEED = 0x0badc0de;
const WEIGHTS = [1, 2, 3];

interface ConnResult {
  port: number;
  backend?: string;
  ok: boolean;
  error?: string;
}

describePrivileged('XDP load balancer end to end (veth topology)', () => {
  const sandbox = useSandbox('xdp-e2e');
  const links: XdpLink[] = [];
  let lb: XdpLoadBalancer | undefined;

  afterEach(() => {
    for (const link of links.splice(0)) link.close();
    lb?.close();
    lb = undefined;
  });

  it('balances real TCP connections by weight with direct server return', async () => {
    const box = sandbox();
    const topo = buildXdpTopology(box, WEIGHTS.length);
    const logged: { object: object; message: string }[] = [];
    const logger: XdpLogger = {
      info: (object, message) => logged.push({ object, message }),
      warn: (object, message) => logged.push({ object, message }),
    };
    lb = XdpLoadBalancer.load(
      bpf,
      OBJECT_DIR,
      { hashSeed: SEED, maglevSize: 65_537, maxVips: 4, encapSource4: NODE_ADDR },
      { pinRoot: box.bpffsDir, logger },
    );
    lb.setService({
      address: VIP,
      port: VIP_PORT,
      protocol: 'tcp',
      backends: WEIGHTS.map((weight, i) => ({ address: backendAddr(i), weight })),
    });

    // Backends: decapsulation on their veth, the VIP on lo, a server that names itself.
    for (const [i, backend] of topo.backends.entries()) {
      links.push(
        lb.object.program(XDP_DECAP_PROGRAM).attachXdp(backend.ifindex(topo.backendLinks[i]!), 'auto', {
          netns: backend.name,
        }),
      );
      const server = box.spawn(
        [process.execPath, '-e', BACKEND_SERVER, `backend${i}`, VIP, String(VIP_PORT)],
        {
          netns: backend,
        },
      );
      expect(JSON.parse(await firstLine(server, 10_000))).toEqual({ listening: true });
    }
    // XDP_TX on a veth needs an XDP program on the peer: a bare XDP_PASS on the router's port.
    links.push(
      lb.object.program(XDP_PASS_PROGRAM).attachXdp(topo.router.ifindex(topo.routerNodePort), 'auto', {
        netns: topo.router.name,
      }),
    );
    const link = lb.attach(topo.node.ifindex(topo.nodeLink), { netns: topo.node.name });
    links.push(link);
    expect(['native', 'generic']).toContain(link.mode);
    expect(logged.some((entry) => entry.message === `XDP load balancer attached in ${link.mode} mode`)).toBe(
      true,
    );

    // Without the node forwarding anything itself, only the XDP program can get packets to a backend.
    expect(topo.node.exec(['sysctl', '-n', 'net.ipv4.ip_forward']).trim()).toBe('0');

    const COUNT = 240;
    const FIRST_PORT = 41_000;
    const client = box.spawn(
      [
        process.execPath,
        '-e',
        CLIENT_SCRIPT,
        VIP,
        String(VIP_PORT),
        String(COUNT),
        String(FIRST_PORT),
        '3000',
      ],
      { netns: topo.client },
    );
    const results = JSON.parse(await firstLine(client, 60_000)) as ConnResult[];
    expect(results.filter((r) => !r.ok)).toEqual([]);
    expect(results).toHaveLength(COUNT);

    // Every connection landed where the datapath's hash and table say, and shares follow the weights.
    const table = lb.table(VIP, VIP_PORT, 'tcp')!;
    const idToName = new Map(WEIGHTS.map((_, i) => [lb!.backendId(backendAddr(i)), `backend${i}`]));
    for (const r of results) {
      const slot = maglevSlot(
        { source: CLIENT_ADDR, sourcePort: r.port, destination: VIP, destinationPort: VIP_PORT, protocol: 6 },
        SEED,
        65_537,
      );
      expect(r.backend, `port ${r.port}`).toBe(idToName.get(table[slot]));
    }
    const total = WEIGHTS.reduce((a, b) => a + b, 0);
    WEIGHTS.forEach((weight, i) => {
      const count = results.filter((r) => r.backend === `backend${i}`).length;
      expect(Math.abs(count / COUNT - weight / total), `backend${i} got ${count}`).toBeLessThan(0.07);
    });

    // Counters: every client packet to the VIP was balanced; replies never crossed the node.
    const stats = lb.stats();
    const vip = stats.vips[0]!;
    const balanced = stats.verdicts.tx_new_flow.packets + stats.verdicts.tx_conn_hit.packets;
    expect(vip.packets).toBe(balanced);
    expect(stats.verdicts.tx_new_flow.packets).toBeGreaterThanOrEqual(BigInt(COUNT));
    expect(stats.verdicts.tx_conn_hit.packets).toBeGreaterThan(BigInt(COUNT * 2));
    expect(stats.backends.reduce((sum, b) => sum + b.packets, 0n)).toBe(vip.packets);
    expect(stats.verdicts.drop_encap.packets + stats.verdicts.drop_no_backend.packets).toBe(0n);

    // An open connection keeps its backend when that backend starts draining; new ones go elsewhere.
    const long = box.spawn([process.execPath, '-e', LONG_CLIENT_SCRIPT, VIP, String(VIP_PORT)], {
      netns: topo.client,
    });
    const lines: string[] = [];
    let pending: ((line: string) => void) | undefined;
    let partial = '';
    long.stdout?.on('data', (chunk: Buffer) => {
      partial += chunk.toString();
      for (let nl = partial.indexOf('\n'); nl >= 0; nl = partial.indexOf('\n')) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        if (pending) {
          const take = pending;
          pending = undefined;
          take(line);
        } else lines.push(line);
      }
    });
    const nextLine = (): Promise<string> =>
      lines.length > 0
        ? Promise.resolve(lines.shift()!)
        : new Promise((resolveLine, reject) => {
            const timer = setTimeout(() => reject(new Error('long-lived client went quiet')), 10_000);
            pending = (line) => {
              clearTimeout(timer);
              resolveLine(line);
            };
          });
    const { backend: pinned } = JSON.parse(await nextLine()) as { backend: string };
    const pinnedIndex = Number(pinned.replace('backend', ''));
    lb.setService({
      address: VIP,
      port: VIP_PORT,
      protocol: 'tcp',
      backends: WEIGHTS.map((weight, i) => ({
        address: backendAddr(i),
        weight,
        state: i === pinnedIndex ? ('draining' as const) : ('active' as const),
      })),
    });
    long.stdin?.write(`${'y'.repeat(2000)}\n`);
    expect(JSON.parse(await nextLine())).toEqual({ echo: true });
    const after = box.spawn(
      [process.execPath, '-e', CLIENT_SCRIPT, VIP, String(VIP_PORT), '60', String(FIRST_PORT + COUNT), '100'],
      { netns: topo.client },
    );
    const fresh = JSON.parse(await firstLine(after, 60_000)) as ConnResult[];
    expect(fresh.filter((r) => !r.ok)).toEqual([]);
    expect(fresh.filter((r) => r.backend === pinned)).toEqual([]);
    long.stdin?.write('still here\n');
    expect(JSON.parse(await nextLine())).toEqual({ echo: true });
  });
});
