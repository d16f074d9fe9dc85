/**
 * The XDP load balancer's test (and benchmark) network, all inside sandbox namespaces with no route out:
 *
 *   client (10.0.0.1) ── router ══ bridge 10.1.0.0/24 ══ node (10.1.0.2, XDP on its veth)
 *                                                    ╚══ backend i (10.1.0.1i, the VIP on lo)
 *
 * The router sends VIP traffic to the node; the node's XDP program encapsulates it to a backend and
 * sends it back out (XDP_TX) to the router, which forwards it on the bridge; the backend decapsulates
 * and answers the client directly through the router (direct server return: replies skip the node).
 * mode 'nft' instead load-balances on the node with nftables DNAT (replies then return via the node).
 */
import type { Netns, Sandbox } from './sandbox';

export const CLIENT_ADDR = '10.0.0.1';
export const NODE_ADDR = '10.1.0.2';
export const ROUTER_LAN_ADDR = '10.1.0.1';
export const VIP = '10.96.0.10';
export const VIP_PORT = 80;
export const backendAddr = (i: number): string => `10.1.0.${11 + i}`;

export interface XdpTopology {
  client: Netns;
  router: Netns;
  node: Netns;
  backends: Netns[];
  /** the node's veth (where the XDP program goes) */
  nodeLink: string;
  /** the router's bridge port towards the node (XDP_TX on a veth needs a program on this peer) */
  routerNodePort: string;
  /** each backend's veth (where the decapsulation program goes) */
  backendLinks: string[];
}

const sysctl = (ns: Netns, ...settings: string[]): void => {
  for (const setting of settings) ns.exec(['sysctl', '-q', '-w', setting]);
};

export function buildXdpTopology(
  sandbox: Sandbox,
  backendCount: number,
  mode: 'xdp' | 'nft' = 'xdp',
): XdpTopology {
  const client = sandbox.netns();
  const router = sandbox.netns();
  const node = sandbox.netns();
  const backends = Array.from({ length: backendCount }, () => sandbox.netns());

  // Client side, MTU 1400 so that encapsulated packets (+20 bytes) fit the 1500-byte LAN.
  const cr = sandbox.veth(client, router, `${CLIENT_ADDR}/24`, '10.0.0.254/24');
  client.exec(['ip', 'link', 'set', cr.a, 'mtu', '1400']);
  router.exec(['ip', 'link', 'set', cr.b, 'mtu', '1400']);
  client.exec(['ip', 'route', 'add', `${VIP}/32`, 'via', '10.0.0.254']);
  // A veth hands on TCP checksums unfinished (CHECKSUM_PARTIAL) for the receiver to "offload"; a
  // frame sent on with XDP_TX loses that state, so the client finishes its checksums itself, as a real
  // NIC's receive path would have them complete.
  client.exec(['ethtool', '-K', cr.a, 'tx', 'off']);
  sysctl(client, 'net.ipv4.conf.all.rp_filter=0', `net.ipv4.conf.${cr.a}.rp_filter=0`);

  router.exec(['ip', 'link', 'add', 'br0', 'type', 'bridge']);
  router.exec(['ip', 'addr', 'add', `${ROUTER_LAN_ADDR}/24`, 'dev', 'br0']);
  router.exec(['ip', 'link', 'set', 'br0', 'up']);
  sysctl(
    router,
    'net.ipv4.ip_forward=1',
    'net.ipv4.conf.all.send_redirects=0',
    'net.ipv4.conf.br0.send_redirects=0',
  );
  sysctl(router, 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.br0.rp_filter=0');

  const rn = sandbox.veth(router, node, undefined, `${NODE_ADDR}/24`);
  router.exec(['ip', 'link', 'set', rn.a, 'master', 'br0']);
  router.exec(['ip', 'route', 'add', `${VIP}/32`, 'via', NODE_ADDR]);

  const backendLinks: string[] = [];
  backends.forEach((backend, i) => {
    const rb = sandbox.veth(router, backend, undefined, `${backendAddr(i)}/24`);
    router.exec(['ip', 'link', 'set', rb.a, 'master', 'br0']);
    backendLinks.push(rb.b);
    sysctl(backend, 'net.ipv4.conf.all.rp_filter=0', `net.ipv4.conf.${rb.b}.rp_filter=0`);
    if (mode === 'xdp') {
      // DSR: the VIP is local on the backend, which answers the client directly via the router.
      backend.addLoopbackAddress(`${VIP}/32`);
      backend.exec(['ip', 'route', 'add', '10.0.0.0/24', 'via', ROUTER_LAN_ADDR]);
    } else {
      // DNAT on the node: replies must go back through the node to be translated back.
      backend.exec(['ip', 'route', 'add', '10.0.0.0/24', 'via', NODE_ADDR]);
    }
  });
  if (mode === 'nft') {
    sysctl(
      node,
      'net.ipv4.ip_forward=1',
      'net.ipv4.conf.all.send_redirects=0',
      `net.ipv4.conf.${rn.b}.send_redirects=0`,
    );
    node.exec(['ip', 'route', 'add', '10.0.0.0/24', 'via', ROUTER_LAN_ADDR]);
  }
  return { client, router, node, backends, nodeLink: rn.b, routerNodePort: rn.a, backendLinks };
}

export interface NftService {
  readonly port: number;
  readonly protocols: readonly ('tcp' | 'udp')[];
  /** weight per backend index (backendAddr(i)); 0 leaves a backend out */
  readonly weights: readonly number[];
}

/** nftables DNAT on the node: VIP:port → backends by weight, through a numgen verdict map per service. */
export function installNftDnat(topology: XdpTopology, services: readonly NftService[]): void {
  const chains: string[] = [];
  const rules: string[] = [];
  services.forEach((service, s) => {
    let at = 0;
    const entries: string[] = [];
    service.weights.forEach((weight, i) => {
      if (weight <= 0) return;
      chains.push(`chain s${s}b${i} { dnat to ${backendAddr(i)}; }`);
      entries.push(weight === 1 ? `${at} : jump s${s}b${i}` : `${at}-${at + weight - 1} : jump s${s}b${i}`);
      at += weight;
    });
    rules.push(
      `ip daddr ${VIP} meta l4proto { ${service.protocols.join(', ')} } th dport ${service.port} numgen random mod ${at} vmap { ${entries.join(', ')} }`,
    );
  });
  const ruleset = `table ip sluice_bench {
  ${chains.join('\n  ')}
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ${rules.join('\n    ')}
  }
}
`;
  topology.node.exec(['sh', '-c', `printf '%s' "$0" | nft -f -`, ruleset]);
}

/** A TCP server for the backends: greets with its name, then echoes. Listens on host:port. */
export const BACKEND_SERVER = `
const net = require('node:net');
const [name, host, port] = process.argv.slice(1);
const server = net.createServer((socket) => {
  socket.on('error', () => {});
  socket.write(name + '\\n');
  socket.pipe(socket);
});
server.listen(Number(port), host, () => process.stdout.write(JSON.stringify({ listening: true }) + '\\n'));
`;

/**
 * A client making \`count\` sequential connections from fixed local ports, each sending a message and
 * reading greeting + echo; prints one JSON line: [{ port, backend, ok }].
 */
export const CLIENT_SCRIPT = `
const net = require('node:net');
const [host, port, count, firstPort, size] = process.argv.slice(1).map((v, i) => (i === 0 ? v : Number(v)));
const payload = Buffer.alloc(size, 'x');
function once(localPort) {
  return new Promise((resolve) => {
    let data = '';
    const timer = setTimeout(() => { socket.destroy(); resolve({ port: localPort, ok: false, error: 'timeout' }); }, 5000);
    const socket = net.connect({ host, port, localPort, localAddress: '${CLIENT_ADDR}' }, () => socket.write(payload));
    socket.setEncoding('latin1');
    socket.on('data', (chunk) => {
      data += chunk;
      const nl = data.indexOf('\\n');
      if (nl >= 0 && data.length - nl - 1 >= size) {
        clearTimeout(timer);
        const backend = data.slice(0, nl);
        const ok = data.slice(nl + 1) === payload.toString('latin1');
        socket.end();
        resolve({ port: localPort, backend, ok });
      }
    });
    socket.on('error', (error) => { clearTimeout(timer); resolve({ port: localPort, ok: false, error: error.code }); });
  });
}
(async () => {
  const results = [];
  for (let i = 0; i < count; i++) results.push(await once(firstPort + i));
  process.stdout.write(JSON.stringify(results) + '\\n');
})();
`;

/**
 * One long-lived connection: prints {"backend"} after the greeting, then for every stdin line sends it
 * and prints {"echo"} once it came back.
 */
export const LONG_CLIENT_SCRIPT = `
const net = require('node:net');
const readline = require('node:readline');
const [host, port] = process.argv.slice(1);
const socket = net.connect({ host, port: Number(port), localAddress: '${CLIENT_ADDR}' });
socket.setEncoding('latin1');
let buffered = '';
let greeted = false;
let expected = '';
socket.on('data', (chunk) => {
  buffered += chunk;
  if (!greeted) {
    const nl = buffered.indexOf('\\n');
    if (nl < 0) return;
    greeted = true;
    process.stdout.write(JSON.stringify({ backend: buffered.slice(0, nl) }) + '\\n');
    buffered = buffered.slice(nl + 1);
  }
  if (expected && buffered.length >= expected.length) {
    process.stdout.write(JSON.stringify({ echo: buffered.slice(0, expected.length) === expected }) + '\\n');
    buffered = buffered.slice(expected.length);
    expected = '';
  }
});
socket.on('error', (error) => process.stdout.write(JSON.stringify({ error: error.code }) + '\\n'));
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  expected = line + '\\n';
  socket.write(expected);
});
`;
