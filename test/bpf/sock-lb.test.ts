/**
 * Socket-LB through real sockets: the hooks attached to the sandbox cgroup, named backends inside a
 * netns with no route out, and clients in that cgroup and netns that report which backend answered and
 * what getpeername()/recvfrom() showed. Every assertion rests on what the kernel did to a real socket.
 */
import type { ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBackendCounters, readServiceCounters } from '../../agent/datapath/counters';
import type { BackendSpec, ServiceSpec } from '../../agent/datapath/model';
import { LbCapacityError, resolveLbSettings } from '../../agent/datapath/settings';
import { SocketLb } from '../../agent/datapath/socket-lb';
import { bpf } from '../../native/index';
import type { BpfLink } from '../../native/types';
import { runLbClient, startLbClient, startLbServer } from '../fixtures/lb';
import { describePrivileged } from '../support/privileged';
import { createSandbox, type Netns, type Sandbox } from '../support/sandbox';

const OBJECT_DIR = resolve(__dirname, '../../build/bpf');

// Backends: a..d on 10.0.1.11..14 and fd00::11..14, TCP and UDP; "dead" addresses have no listener.
const NAMES = ['a', 'b', 'c', 'd'] as const;
type Name = (typeof NAMES)[number];
const V4: Record<Name, string> = { a: '10.0.1.11', b: '10.0.1.12', c: '10.0.1.13', d: '10.0.1.14' };
const V6: Record<Name, string> = { a: 'fd00::11', b: 'fd00::12', c: 'fd00::13', d: 'fd00::14' };
const DEAD = ['10.0.1.97', '10.0.1.98', '10.0.1.99'];
const PORT = 8080;
const UDP_PORT = 5353;

const tcp = (name: Name, weight = 1): BackendSpec => ({ address: V4[name], port: PORT, weight });
const tcp6 = (name: Name): BackendSpec => ({ address: V6[name], port: PORT });
const udp = (name: Name): BackendSpec => ({ address: V4[name], port: UDP_PORT });

function service(
  vip: string,
  port: number,
  backends: BackendSpec[],
  extra: Partial<ServiceSpec> = {},
): ServiceSpec {
  return { vip, port, backends, ...extra };
}

describePrivileged('socket-LB (cgroup hooks, real sockets)', () => {
  let box: Sandbox;
  let ns: Netns;
  let lb: SocketLb;
  let links: BpfLink[] = [];
  const servers: ChildProcess[] = [];
  const settings = resolveLbSettings({ reclaimGraceMs: 5 });

  beforeAll(async () => {
    box = createSandbox('sock-lb');
    ns = box.netns();
    for (const name of NAMES) {
      ns.addLoopbackAddress(`${V4[name]}/32`);
      ns.addLoopbackAddress(`${V6[name]}/128`);
    }
    for (const dead of DEAD) ns.addLoopbackAddress(`${dead}/32`);
    for (const name of NAMES) {
      servers.push(
        await startLbServer(box, ns, name, [
          `tcp:${V4[name]}:${PORT}`,
          `tcp:[${V6[name]}]:${PORT}`,
          `udp:${V4[name]}:${UDP_PORT}`,
        ]),
      );
    }
    lb = SocketLb.load(bpf, { objectDir: OBJECT_DIR, pinRoot: box.bpffsDir, settings });
    links = lb.attach(box.cgroupPath);
  });

  afterAll(async () => {
    for (const link of links) link.close();
    lb?.close();
    await box?.cleanup();
  });

  const idOf = (vip: string, port: number, proto = 'tcp'): number => {
    const s = lb.datapath.writer.state.services.get(`${proto}:[${vip}]:${port}`);
    if (!s) throw new Error(`no service ${vip}:${port}`);
    return s.id;
  };
  const backendId = (vip: string, port: number, address: string, bport: number, proto = 'tcp'): number => {
    const s = lb.datapath.writer.state.services.get(`${proto}:[${vip}]:${port}`)!;
    return s.members.get(`${address}|${bport}`)!.id;
  };

  describe('translation', () => {
    it('sends a TCP connect to a backend, shows the VIP to getpeername, and only under the hooks', async () => {
      await lb.datapath.sync([service('10.96.0.10', 80, [tcp('a'), tcp('b')])]);
      const { attempts, totals } = await runLbClient(box, ns, '10.96.0.10:80', { count: 40 });
      expect(totals.errors).toBe(0);
      expect(new Set(attempts.map((a) => a.name))).toEqual(new Set(['a', 'b']));
      expect(totals.peers).toEqual({ '10.96.0.10:80': 40 });
      // Outside the cgroup the VIP is just an address with no route: the hooks did the work.
      const outside = await runLbClient(box, ns, '10.96.0.10:80', { count: 1, inCgroup: false });
      expect(outside.totals.ok).toBe(0);
      expect(outside.attempts[0]?.code).toMatch(/ENETUNREACH|EHOSTUNREACH|ETIMEDOUT/);
    });

    it('fails connect() and sendmsg() fast with ECONNREFUSED when no backend is usable', async () => {
      await lb.datapath.sync([
        service('10.96.0.20', 80, []),
        service('10.96.0.21', 80, [{ ...tcp('a'), state: 'draining' }]),
        service('10.96.0.20', 53, [], { protocol: 'udp' }),
      ]);
      const empty = await runLbClient(box, ns, '10.96.0.20:80', { count: 5 });
      expect(empty.totals.codes).toEqual({ ECONNREFUSED: 5 });
      expect(empty.totals.elapsedMs).toBeLessThan(2000);
      const draining = await runLbClient(box, ns, '10.96.0.21:80', { count: 3 });
      expect(draining.totals.codes).toEqual({ ECONNREFUSED: 3 });
      const udpEmpty = await runLbClient(box, ns, '10.96.0.20:53', { proto: 'udp', count: 2 });
      expect(udpEmpty.totals.codes).toEqual({ ECONNREFUSED: 2 });
      expect(readServiceCounters(lb.maps, idOf('10.96.0.20', 80)).noBackend).toBe(5n);
    });

    it('answers unconnected UDP from the VIP, and connected UDP shows the VIP as its peer', async () => {
      await lb.datapath.sync([service('10.96.0.53', 53, [udp('a'), udp('b')], { protocol: 'udp' })]);
      const unconnected = await runLbClient(box, ns, '10.96.0.53:53', { proto: 'udp', count: 30 });
      expect(unconnected.totals.errors).toBe(0);
      expect(new Set(unconnected.attempts.map((a) => a.from))).toEqual(new Set(['10.96.0.53:53']));
      expect(new Set(unconnected.attempts.map((a) => a.name))).toEqual(new Set(['a', 'b']));
      const connected = await runLbClient(box, ns, '10.96.0.53:53', { proto: 'udp-connected', count: 30 });
      expect(connected.totals.errors).toBe(0);
      expect(connected.totals.peers).toEqual({ '10.96.0.53:53': 30 });
      expect(new Set(connected.attempts.map((a) => a.from))).toEqual(new Set(['10.96.0.53:53']));
      expect(new Set(connected.attempts.map((a) => a.name))).toEqual(new Set(['a', 'b']));
    });

    it('balances IPv6 services, and IPv4 services from v4-mapped IPv6 sockets', async () => {
      await lb.datapath.sync([
        service('fd00:96::10', 80, [tcp6('c'), tcp6('d')]),
        service('10.96.0.10', 80, [tcp('a'), tcp('b')]),
      ]);
      const v6 = await runLbClient(box, ns, '[fd00:96::10]:80', { count: 30 });
      expect(v6.totals.errors).toBe(0);
      expect(new Set(v6.attempts.map((a) => a.name))).toEqual(new Set(['c', 'd']));
      expect(v6.totals.peers).toEqual({ '[fd00:96::10]:80': 30 });
      const mapped = await runLbClient(box, ns, '10.96.0.10:80', { count: 30, family: 6 });
      expect(mapped.totals.errors).toBe(0);
      expect(new Set(mapped.attempts.map((a) => a.name))).toEqual(new Set(['a', 'b']));
      expect(mapped.totals.peers).toEqual({ '[::ffff:10.96.0.10]:80': 30 });
    });
  });
});
