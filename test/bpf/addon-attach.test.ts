/**
 * The native addon's attach types, each proven by real traffic: a connect4 rewrite seen by a real
 * connect() from a process in a test cgroup inside a netns, sock_ops callbacks counted, an sk_msg
 * program on a sockhash seen to run, XDP on a veth counting real packets, and an iterator run. Links
 * are pinned, reopened, updated and detached.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { type BpfLink, type BpfObject, bpf } from '../../native/index';
import { runClient, startEchoServer } from '../fixtures/tcp';
import { describePrivileged } from '../support/privileged';
import { type Netns, useSandbox } from '../support/sandbox';

const PROGS = resolve(__dirname, '../../build/bpf-test');
const SOCK_OBJ = join(PROGS, 'addon_sock.bpf.o');
const XDP_OBJ = join(PROGS, 'addon_xdp.bpf.o');
const ITER_OBJ = join(PROGS, 'addon_iter.bpf.o');

// Counter slots of addon_counts (test/bpf/progs/addon_sock.bpf.c).
const CNT_CONNECT4_REWRITE = 32;
const CNT_SKMSG_MSGS = 33;
const CNT_SKMSG_BYTES = 34;
const CNT_SOCKHASH_ADDED = 35;
const BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB = 4;
const BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB = 5;

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

/** struct addon_addr4: IPv4 and port in network order, then two pad bytes. */
function addr4(ip: string, port: number): Buffer {
  const b = Buffer.alloc(8);
  Buffer.from(ip.split('.').map(Number)).copy(b, 0);
  b.writeUInt16BE(port, 4);
  return b;
}

function counter(obj: BpfObject, slot: number): bigint {
  return obj.map('addon_counts').lookup(u32(slot))!.readBigUInt64LE(0);
}

// What iproute2 reports as an interface's XDP attachment (uapi XDP_ATTACHED_*).
const XDP_ATTACHED_DRV = 1;
const XDP_ATTACHED_SKB = 2;
function xdpMode(ns: Netns, link: string): number | undefined {
  const parsed = JSON.parse(ns.exec(['ip', '-j', 'link', 'show', 'dev', link])) as Array<{
    xdp?: { mode: number };
  }>;
  return parsed[0]?.xdp?.mode;
}

function thrown(fn: () => unknown): Error & { code?: string; op?: string } {
  try {
    fn();
  } catch (error) {
    return error as Error & { code?: string };
  }
  throw new Error('expected a throw');
}

describePrivileged('native addon: attach types', () => {
  const sandbox = useSandbox('addon-attach');
  const objects: BpfObject[] = [];
  const links: BpfLink[] = [];
  const load = (path: string): BpfObject => {
    const obj = bpf.loadObject(path);
    objects.push(obj);
    return obj;
  };
  const track = <T extends BpfLink>(link: T): T => {
    links.push(link);
    return link;
  };
  afterEach(() => {
    for (const link of links.splice(0)) link.close();
    for (const obj of objects.splice(0)) obj.close();
  });

  it('rewrites connect() to a VIP with a connect4 link on the test cgroup', async () => {
    const box = sandbox();
    const ns = box.netns();
    const server = await startEchoServer(box, { netns: ns });
    const obj = load(SOCK_OBJ);
    obj.map('addon_rewrites').update(addr4('10.96.0.10', 80), addr4('127.0.0.1', server.port));

    // Before the hook: the VIP has no route in this netns.
    const before = await runClient(box, '10.96.0.10', 80, { netns: ns, inCgroup: true });
    expect(before.error).toBe('ENETUNREACH');

    const link = track(obj.program('addon_connect4').attachCgroup(box.cgroupPath));
    expect(link.info?.()).toMatchObject({ kind: 'link', type: 'cgroup', attached: true });
    const after = await runClient(box, '10.96.0.10', 80, { netns: ns, inCgroup: true, messages: 3 });
    expect(after).toMatchObject({ remoteAddress: '127.0.0.1', remotePort: server.port, echoed: 3 });
    expect(counter(obj, CNT_CONNECT4_REWRITE)).toBe(1n);

    // A process outside the cgroup is not rewritten.
    const outside = await runClient(box, '10.96.0.10', 80, { netns: ns, inCgroup: false });
    expect(outside.error).toBe('ENETUNREACH');

    link.detach();
    expect(link.info?.().attached).toBe(false);
    const detached = await runClient(box, '10.96.0.10', 80, { netns: ns, inCgroup: true });
    expect(detached.error).toBe('ENETUNREACH');
    expect(counter(obj, CNT_CONNECT4_REWRITE)).toBe(1n);
  });

  it('attaches every sock_addr hook as a cgroup link', () => {
    const box = sandbox();
    const obj = load(SOCK_OBJ);
    const expected: Record<string, string> = {
      addon_connect4: 'cgroup_inet4_connect',
      addon_connect6: 'cgroup_inet6_connect',
      addon_sendmsg4: 'cgroup_udp4_sendmsg',
      addon_sendmsg6: 'cgroup_udp6_sendmsg',
      addon_recvmsg4: 'cgroup_udp4_recvmsg',
      addon_recvmsg6: 'cgroup_udp6_recvmsg',
      addon_getpeername4: 'cgroup_inet4_getpeername',
      addon_getpeername6: 'cgroup_inet6_getpeername',
    };
    for (const [name, attachType] of Object.entries(expected)) {
      const program = obj.program(name);
      expect(program.info()).toMatchObject({ type: 'cgroup_sock_addr', attachType });
      const link = track(program.attachCgroup(box.cgroupPath));
      expect(link.info?.()).toMatchObject({ type: 'cgroup', attached: true });
    }
    const attached = execFileSync('bpftool', ['cgroup', 'show', box.cgroupPath], { encoding: 'utf8' });
    for (const name of Object.keys(expected)) expect(attached).toContain(name.slice(0, 15));
  });

  it('fails with ENOENT on a missing cgroup', () => {
    const obj = load(SOCK_OBJ);
    const error = thrown(() =>
      obj.program('addon_connect4').attachCgroup(join(sandbox().cgroupPath, 'missing')),
    );
    expect(error).toMatchObject({ code: 'ENOENT', errno: 2 });
  });

  it('counts sock_ops callbacks of connections in the test cgroup', async () => {
    const box = sandbox();
    const ns = box.netns();
    const obj = load(SOCK_OBJ);
    track(obj.program('addon_sockops').attachCgroup(box.cgroupPath));
    const server = await startEchoServer(box, { netns: ns, inCgroup: true });
    const result = await runClient(box, '127.0.0.1', server.port, { netns: ns, inCgroup: true });
    expect(result.echoed).toBe(1);
    expect(counter(obj, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)).toBe(1n);
    expect(counter(obj, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)).toBe(1n);
    // Both ends went into the sockhash.
    expect(counter(obj, CNT_SOCKHASH_ADDED)).toBe(2n);
    expect(obj.map('addon_socks').info()).toMatchObject({ type: 'sockhash', keySize: 16, valueSize: 4 });
  });

  it.each([
    ['auto', 'link'],
    ['prog_attach', 'prog_attach'],
  ] as const)('runs an sk_msg program attached to a sockhash on every message (%s)', async (method, kind) => {
    const box = sandbox();
    const ns = box.netns();
    const obj = load(SOCK_OBJ);
    // This kernel (6.10+) has sockmap links, so auto makes one; prog_attach is the older kernels' path.
    const verdict = track(
      obj.program('addon_skmsg').attachSockmap(obj.map('addon_socks'), undefined, { method }),
    );
    expect(verdict.kind).toBe(kind);
    expect(verdict.info?.()).toMatchObject({ kind, attached: true });
    if (kind === 'prog_attach') {
      expect(thrown(() => verdict.pin(join(box.bpffsDir, 'skmsg')))).toMatchObject({ code: 'EOPNOTSUPP' });
    }
    track(obj.program('addon_sockops').attachCgroup(box.cgroupPath));
    const server = await startEchoServer(box, { netns: ns, inCgroup: true });
    const result = await runClient(box, '127.0.0.1', server.port, { netns: ns, inCgroup: true, messages: 5 });
    expect(result.echoed).toBe(5);
    expect(counter(obj, CNT_SOCKHASH_ADDED)).toBe(2n);
    // Five client messages ("message N\n", 10 bytes each) and the server's echoes of them.
    expect(counter(obj, CNT_SKMSG_MSGS)).toBeGreaterThanOrEqual(6n);
    expect(counter(obj, CNT_SKMSG_BYTES)).toBe(100n);

    verdict.detach();
    if (kind === 'prog_attach') expect(verdict.info?.().attached).toBe(false);
    const messagesBefore = counter(obj, CNT_SKMSG_MSGS);
    const again = await runClient(box, '127.0.0.1', server.port, { netns: ns, inCgroup: true, messages: 2 });
    expect(again.echoed).toBe(2);
    expect(counter(obj, CNT_SKMSG_MSGS)).toBe(messagesBefore);
  });

  it('detaches a prog_attach sk_msg attachment when its handle is closed, like an unpinned link', async () => {
    const box = sandbox();
    const ns = box.netns();
    const obj = load(SOCK_OBJ);
    const socks = obj.map('addon_socks');
    const verdict = track(
      obj.program('addon_skmsg').attachSockmap(socks, undefined, { method: 'prog_attach' }),
    );
    // Attaching the same type again through prog_attach replaces the program in place.
    const other = load(SOCK_OBJ);
    verdict.update(other.program('addon_skmsg'));
    track(obj.program('addon_sockops').attachCgroup(box.cgroupPath));
    const server = await startEchoServer(box, { netns: ns, inCgroup: true });
    await runClient(box, '127.0.0.1', server.port, { netns: ns, inCgroup: true, messages: 2 });
    expect(counter(obj, CNT_SKMSG_MSGS)).toBe(0n);
    expect(counter(other, CNT_SKMSG_MSGS)).toBeGreaterThanOrEqual(2n);
    verdict.close();
    const before = counter(other, CNT_SKMSG_MSGS);
    await runClient(box, '127.0.0.1', server.port, { netns: ns, inCgroup: true, messages: 2 });
    expect(counter(other, CNT_SKMSG_MSGS)).toBe(before);
  });

  it('counts real packets with XDP on a veth inside a test netns, pins and reopens the link', async () => {
    const box = sandbox();
    const client = box.netns();
    const host = box.netns();
    const pair = box.veth(client, host, '192.168.77.1/30', '192.168.77.2/30');
    const obj = load(XDP_OBJ);
    const ifindex = host.ifindex(pair.b);
    const link = track(obj.program('addon_xdp_count').attachXdp(ifindex, 'auto', { netns: host.name }));
    expect(link.mode).toBe('native'); // veth has native XDP
    expect(link.info?.()).toMatchObject({ type: 'xdp', attached: true, mode: 'native' });
    expect(xdpMode(host, pair.b)).toBe(XDP_ATTACHED_DRV);

    const total = (slot: number): bigint =>
      obj
        .map('addon_xdp_counts')
        .lookupPerCpu(u32(slot))!
        .reduce((sum, value) => sum + value.readBigUInt64LE(0), 0n);
    const server = await startEchoServer(box, { netns: host, host: '192.168.77.2' });
    const first = await runClient(box, '192.168.77.2', server.port, { netns: client, messages: 3 });
    expect(first.echoed).toBe(3);
    const ipv4 = total(1);
    // SYN, ACK, three messages and the FIN at least; ARP resolved the neighbour first.
    expect(ipv4).toBeGreaterThanOrEqual(5n);
    expect(total(2)).toBeGreaterThanOrEqual(1n);

    // Pinned, the link outlives its handle and can be reopened.
    const pinPath = join(box.bpffsDir, 'xdp_link');
    link.pin(pinPath);
    link.close();
    const reopened = track(bpf.openPinnedLink(pinPath));
    expect(reopened.info?.()).toMatchObject({ type: 'xdp', attached: true });
    await runClient(box, '192.168.77.2', server.port, { netns: client });
    expect(total(1)).toBeGreaterThan(ipv4);

    reopened.unpin();
    expect(existsSync(pinPath)).toBe(false);
    reopened.detach();
    expect(reopened.info?.().attached).toBe(false);
    const afterDetach = total(1);
    await runClient(box, '192.168.77.2', server.port, { netns: client });
    expect(total(1)).toBe(afterDetach);
  });

  it('attaches XDP in generic mode on request', () => {
    const box = sandbox();
    const a = box.netns();
    const b = box.netns();
    const pair = box.veth(a, b);
    const obj = load(XDP_OBJ);
    const link = track(
      obj.program('addon_xdp_count').attachXdp(a.ifindex(pair.a), 'generic', { netns: a.name }),
    );
    expect(link.mode).toBe('generic');
    expect(xdpMode(a, pair.a)).toBe(XDP_ATTACHED_SKB);
    // A missing interface in that namespace.
    expect(
      thrown(() => obj.program('addon_xdp_swap').attachXdp(999_999, 'auto', { netns: a.name })).code,
    ).toBe('ENODEV');
  });

  it('pins a cgroup link, reopens it and swaps its program with update()', async () => {
    const box = sandbox();
    const ns = box.netns();
    const server = await startEchoServer(box, { netns: ns });
    const first = load(SOCK_OBJ);
    const second = load(SOCK_OBJ);
    for (const obj of [first, second]) {
      obj.map('addon_rewrites').update(addr4('10.96.0.10', 80), addr4('127.0.0.1', server.port));
    }
    const pinPath = join(box.bpffsDir, 'connect4_link');
    const link = first.program('addon_connect4').attachCgroup(box.cgroupPath);
    link.pin(pinPath);
    link.close();

    const reopened = track(bpf.openPinnedLink(pinPath));
    expect(reopened.pinnedPath).toBe(pinPath);
    expect((await runClient(box, '10.96.0.10', 80, { netns: ns, inCgroup: true })).echoed).toBe(1);
    expect(counter(first, CNT_CONNECT4_REWRITE)).toBe(1n);

    reopened.update(second.program('addon_connect4'));
    expect(reopened.info?.().progId).toBe(second.program('addon_connect4').info().id);
    expect((await runClient(box, '10.96.0.10', 80, { netns: ns, inCgroup: true })).echoed).toBe(1);
    expect(counter(first, CNT_CONNECT4_REWRITE)).toBe(1n);
    expect(counter(second, CNT_CONNECT4_REWRITE)).toBe(1n);
    reopened.unpin();
  });

  it('runs a task iterator and reads its output', () => {
    const obj = load(ITER_OBJ);
    const link = track(obj.program('addon_iter_task').attachIter());
    const lines = bpf.runIter(link).toString().trim().split('\n');
    expect(lines.length).toBeGreaterThan(2);
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${process.pid} `)));
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${process.ppid} `)));
    // A second run sees the world again.
    expect(bpf.runIter(link).toString()).toContain(`${process.pid} `);
  });
});
