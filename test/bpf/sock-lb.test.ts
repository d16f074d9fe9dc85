/**
 * Socket-LB through real sockets: the hooks attached to the sandbox cgroup, named backends inside a
 * netns with no route out, and clients in that cgroup and netns that report which backend answered and
 * what getpeername()/recvfrom() showed. Every assertion rests on what the kernel did to a real socket.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fieldOffsets } from '../../agent/abi/codec';
import { ipToBytes16 } from '../../agent/abi/ip';
import {
  BackendStateCodec,
  IPPROTO_TCP,
  LB_SOCK_TABLE_SIZE,
  LB_SVC_F_INLINE,
  LbMaps,
  LbRetiredMaps,
  ServiceCodec,
  ServiceKeyCodec,
  SockSlotCodec,
} from '../../agent/abi/lb';
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
  const settings = resolveLbSettings({ reclaimGraceMs: 2 });

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
    lb = SocketLb.load(bpf, {
      objectDir: OBJECT_DIR,
      pinRoot: box.bpffsDir,
      settings,
      reapNetns: [`/run/netns/${ns.name}`],
    });
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
      expect(readServiceCounters(lb.maps, idOf('10.96.0.20', 80), []).noBackend).toBe(5n);
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

  describe('policies', () => {
    it('weighted: each backend gets its share within ±3% over 100 000 connects', async () => {
      const weights: Record<'a' | 'b' | 'c', number> = { a: 1, b: 3, c: 6 };
      await lb.datapath.sync([
        service(
          '10.96.0.30',
          53,
          [udp('a'), udp('b'), udp('c')].map((b, i) => ({ ...b, weight: [1, 3, 6][i] })),
          {
            protocol: 'udp',
            algorithm: 'weighted',
          },
        ),
      ]);
      const { totals } = await runLbClient(
        box,
        ns,
        '10.96.0.30:53',
        { proto: 'udp-connected', count: 100_000, concurrency: 16, summary: true },
        120_000,
      );
      expect(totals.errors).toBe(0);
      const total = totals.ok;
      for (const [name, weight] of Object.entries(weights)) {
        const share = (totals.names[name] ?? 0) / total;
        const expected = weight / 10;
        expect(Math.abs(share - expected) / expected, `${name}: ${share} vs ${expected}`).toBeLessThan(0.03);
      }
    });

    it('round-robin: strict rotation on one CPU, counts within one per CPU overall', async () => {
      await lb.datapath.sync([
        service('10.96.0.31', 80, [tcp('a'), tcp('b'), tcp('c')], { algorithm: 'round-robin' }),
      ]);
      const client = box.spawn(
        [
          'taskset',
          '-c',
          '0',
          'node',
          resolve(__dirname, '../fixtures/lb-client.js'),
          '--target',
          '10.96.0.31:80',
          '--count',
          '30',
        ],
        { netns: ns, inCgroup: true },
      );
      const lines: string[] = [];
      let out = '';
      client.stdout?.on('data', (c: Buffer) => {
        out += c.toString();
      });
      await new Promise((r) => client.on('exit', r));
      lines.push(...out.trim().split('\n'));
      const names = lines
        .map((l) => JSON.parse(l) as { name?: string })
        .flatMap((p) => (p.name ? [p.name] : []));
      expect(names).toHaveLength(30);
      // one CPU: each window of three holds all three backends, in a fixed order
      for (let i = 3; i < names.length; i++) expect(names[i]).toBe(names[i - 3]);
      expect(new Set(names.slice(0, 3)).size).toBe(3);

      const spread = await runLbClient(box, ns, '10.96.0.31:80', {
        count: 300,
        concurrency: 4,
        summary: true,
      });
      expect(spread.totals.errors).toBe(0);
      const counts = Object.values(spread.totals.names);
      expect(counts).toHaveLength(3);
      expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(bpf.possibleCpus());
    });

    it('least-connections: new connects go to the idle backend', async () => {
      await lb.datapath.sync([service('10.96.0.32', 80, [tcp('a')], { algorithm: 'least-connections' })]);
      const holder = startLbClient(box, ns, '10.96.0.32:80', { count: 20, hold: true, summary: true });
      const held = await holder.totals;
      expect(held.names).toEqual({ a: 20 });
      await lb.datapath.sync([
        service('10.96.0.32', 80, [tcp('a'), tcp('b')], { algorithm: 'least-connections' }),
      ]);
      const idA = backendId('10.96.0.32', 80, V4.a, PORT);
      expect(readBackendCounters(lb.maps, idA).active).toBe(20n);
      const { totals } = await runLbClient(box, ns, '10.96.0.32:80', { count: 50, summary: true });
      expect(totals.errors).toBe(0);
      expect(totals.names.b ?? 0).toBeGreaterThanOrEqual(48);
      await holder.stop();
      await sleep(200);
      expect(readBackendCounters(lb.maps, idA).active).toBe(0n);
    });

    it('affinity: a client sticks to one backend while it remains in the service', async () => {
      const all = [tcp('a'), tcp('b'), tcp('c')];
      await lb.datapath.sync([service('10.96.0.33', 80, all, { affinity: { timeoutSeconds: 60 } })]);
      const first = await runLbClient(box, ns, '10.96.0.33:80', { count: 30, summary: true });
      expect(first.totals.errors).toBe(0);
      const names = Object.keys(first.totals.names);
      expect(names).toHaveLength(1);
      const stuck = names[0] as Name;
      // the remembered backend leaves: the client moves, and sticks again
      await lb.datapath.sync([
        service(
          '10.96.0.33',
          80,
          all.filter((b) => b.address !== V4[stuck]),
          { affinity: { timeoutSeconds: 60 } },
        ),
      ]);
      const moved = await runLbClient(box, ns, '10.96.0.33:80', { count: 30, summary: true });
      expect(moved.totals.errors).toBe(0);
      expect(Object.keys(moved.totals.names)).toHaveLength(1);
      expect(moved.totals.names[stuck]).toBeUndefined();
      // without affinity the same service spreads
      await lb.datapath.sync([service('10.96.0.33', 80, all)]);
      const spread = await runLbClient(box, ns, '10.96.0.33:80', { count: 60, summary: true });
      expect(Object.keys(spread.totals.names).length).toBeGreaterThan(1);
    });
  });

  it('affinity: kept over a weight change while fresh, dropped after the timeout', async () => {
    const affinity = { timeoutSeconds: 1 };
    await lb.datapath.sync([service('10.96.0.34', 80, [tcp('a')], { affinity, algorithm: 'weighted' })]);
    const first = await runLbClient(box, ns, '10.96.0.34:80', { count: 5, summary: true });
    expect(first.totals.names).toEqual({ a: 5 });
    // b now holds 1023 of 1024 slots, but the client's remembered backend is still in the service
    await lb.datapath.sync([
      service('10.96.0.34', 80, [tcp('a'), tcp('b', 65_535)], { affinity, algorithm: 'weighted' }),
    ]);
    const kept = await runLbClient(box, ns, '10.96.0.34:80', { count: 10, summary: true });
    expect(kept.totals.names).toEqual({ a: 10 });
    await sleep(1300);
    const expired = await runLbClient(box, ns, '10.96.0.34:80', { count: 10, summary: true });
    expect(expired.totals.names).toEqual({ b: 10 });
  });

  describe('updates', () => {
    it('never shows connect() a half-written backend set while thousands of updates land', async () => {
      const sets: BackendSpec[][] = [
        [tcp('a'), tcp('b', 3)],
        [tcp('c')],
        [tcp('a', 2), tcp('b'), tcp('c', 5)],
        [tcp('b')],
        [tcp('c', 7), tcp('a')],
      ];
      await lb.datapath.sync([service('10.96.0.40', 80, sets[0]!)]);
      const client = startLbClient(box, ns, '10.96.0.40:80', {
        concurrency: 2,
        summary: true,
        timeoutMs: 1000,
      });
      let updates = 0;
      const deadline = Date.now() + 20_000;
      while (updates < 2000 && Date.now() < deadline) {
        await lb.datapath.sync([service('10.96.0.40', 80, sets[updates % sets.length]!)]);
        updates++;
      }
      const { totals } = await client.stop();
      expect(updates).toBeGreaterThanOrEqual(1000);
      expect(totals.ok).toBeGreaterThan(100);
      expect(totals.codes).toEqual({});
      // d is in no set: a connect that saw a torn table would have been refused or gone astray
      expect(Object.keys(totals.names).sort()).toEqual(['a', 'b', 'c']);
    });

    it('adopts pinned maps on restart: same ids, nothing rewritten, traffic undisturbed', async () => {
      const services = [
        service('10.96.0.41', 80, [tcp('a'), tcp('b')]),
        service('10.96.0.42', 80, [tcp('c')]),
      ];
      await lb.datapath.sync(services);
      const before = lb.datapath.writer.state;
      const client = startLbClient(box, ns, '10.96.0.41:80', {
        concurrency: 2,
        summary: true,
        timeoutMs: 1000,
      });
      await sleep(200);
      const second = SocketLb.load(bpf, { objectDir: OBJECT_DIR, pinRoot: box.bpffsDir, settings });
      try {
        const restored = second.datapath.writer.state;
        expect([...restored.services.keys()].sort()).toEqual([...before.services.keys()].sort());
        for (const [key, s] of before.services) {
          const r = restored.services.get(key)!;
          expect(r.id).toBe(s.id);
          expect(r.generation).toBe(s.generation);
          expect(r.slots).toEqual(s.slots);
          expect([...r.members.values()].map((m) => m.id).sort()).toEqual(
            [...s.members.values()].map((m) => m.id).sort(),
          );
        }
        const result = await second.datapath.sync(services);
        expect(
          result.plan.backendWrites.length +
            result.plan.tableWrites.length +
            result.plan.serviceWrites.length,
        ).toBe(0);
      } finally {
        second.close();
      }
      await sleep(200);
      const { totals } = await client.stop();
      expect(totals.ok).toBeGreaterThan(10);
      expect(totals.codes).toEqual({});
    });

    it('upgrades services pinned in the v1 layout: records carried over (inline where they qualify) before the programs switch', async () => {
      const services = [
        service('10.96.0.43', 80, [tcp('a'), tcp('b')]),
        service('10.96.0.44', 80, [tcp('a', 1), tcp('b', 3)], { algorithm: 'weighted' }),
        service('10.96.0.45', 80, NAMES.map((n) => tcp(n)).concat([{ address: DEAD[0]!, port: PORT }])),
      ];
      await lb.datapath.sync(services);
      const current = lb.sockLb.map(LbMaps.services);
      const written = current.lookupBatch();
      const byKey = new Map(written.keys.map((k, i) => [k.toString('hex'), written.values[i]!]));
      const { inline_slots: inlineAt, flags: flagsAt } = fieldOffsets(ServiceCodec, [
        'inline_slots',
        'flags',
      ]);
      const flagsOf = (vip: string) =>
        byKey.get(
          ServiceKeyCodec.encode({ addr: ipToBytes16(vip), port: 80, proto: IPPROTO_TCP }).toString('hex'),
        )![flagsAt]!;
      expect(flagsOf('10.96.0.43') & LB_SVC_F_INLINE).toBe(LB_SVC_F_INLINE);
      expect(flagsOf('10.96.0.44') & LB_SVC_F_INLINE).toBe(0); // weighted: a table, not the members
      expect(flagsOf('10.96.0.45') & LB_SVC_F_INLINE).toBe(0); // five backends: more than fit inline

      // What an older agent left: services_v1 (records without inline slots), and no services_v2 pin.
      const v2Pin = join(box.bpffsDir, LbMaps.services);
      const v1Pin = join(box.bpffsDir, LbRetiredMaps.servicesV1);
      const v1 = bpf.createMap({
        type: 'hash',
        name: 'sluice_lb_svc1',
        keySize: ServiceKeyCodec.size,
        valueSize: inlineAt,
        maxEntries: 65_536,
      });
      for (const [i, key] of written.keys.entries()) {
        const old = Buffer.from(written.values[i]!.subarray(0, inlineAt));
        old[flagsAt] = old[flagsAt]! & ~LB_SVC_F_INLINE;
        v1.update(key, old);
      }
      v1.pin(v1Pin);
      v1.close();
      rmSync(v2Pin);
      // ... and the v1 live state and per-CPU counters of one member (connects and closes per CPU there).
      const member = backendId('10.96.0.43', 80, V4.a, PORT);
      const memberKey = Buffer.alloc(4);
      memberKey.writeUInt32LE(member);
      const serviceKey = Buffer.alloc(4);
      serviceKey.writeUInt32LE(idOf('10.96.0.43', 80));
      const cpus = bpf.possibleCpus();
      const retiredCounters = [
        { name: LbRetiredMaps.backendStateV1, type: 'array', size: 32, entries: 65_537 },
        { name: LbRetiredMaps.backendStatsV1, type: 'percpu_array', size: 32, entries: 65_537 },
        { name: LbRetiredMaps.serviceStatsV1, type: 'percpu_array', size: 40, entries: 65_537 },
      ];
      for (const { name, type, size, entries } of retiredCounters) {
        const map = bpf.createMap({
          type,
          name: name.slice(0, 15),
          keySize: 4,
          valueSize: size,
          maxEntries: entries,
        });
        const value = (words: bigint[]) => {
          const buf = Buffer.alloc(size);
          words.forEach((w, i) => {
            buf.writeBigUInt64LE(w, 8 * i);
          });
          return buf;
        };
        if (name === LbRetiredMaps.backendStateV1) {
          // ejected_until 0, active 5, consecutive_fails 1 | consecutive_ejects 0
          map.update(memberKey, value([0n, 5n, 1n]));
        } else if (name === LbRetiredMaps.backendStatsV1) {
          // connects 10, connect_failures 2, ejections 1, closed 3 (per CPU)
          map.updatePerCpu(
            memberKey,
            Array.from({ length: cpus }, () => value([10n, 2n, 1n, 3n])),
          );
        } else {
          // connects 9, connect_failures 2, no_backend 4, ejections 1, rr_cursor 0 (per CPU)
          map.updatePerCpu(
            serviceKey,
            Array.from({ length: cpus }, () => value([9n, 2n, 4n, 1n, 0n])),
          );
        }
        map.pin(join(box.bpffsDir, name));
        map.close();
      }
      const currentCounters = [LbMaps.backendState, LbMaps.backendStats, LbMaps.serviceStats].map((name) => ({
        name,
        map: lb.sockLb.map(name),
      }));
      for (const { name } of currentCounters) rmSync(join(box.bpffsDir, name));
      const upgraded = SocketLb.load(bpf, { objectDir: OBJECT_DIR, pinRoot: box.bpffsDir, settings });
      try {
        expect(existsSync(v1Pin)).toBe(false);
        const migrated = upgraded.sockLb.map(LbMaps.services).lookupBatch();
        expect(migrated.keys).toHaveLength(written.keys.length);
        migrated.keys.forEach((key, i) => {
          expect(migrated.values[i]!.equals(byKey.get(key.toString('hex'))!)).toBe(true);
        });
        // The upgraded agent's writer sees exactly what it would have written: nothing to do.
        const result = await upgraded.datapath.sync(services);
        expect(result.plan.serviceWrites).toHaveLength(0);
        // Live state kept (active connections, failures), its service named, counters carried over.
        const n = BigInt(cpus);
        expect(readBackendCounters(upgraded.maps, member)).toMatchObject({
          active: 5n,
          consecutiveFailures: 1,
          connects: 10n * n,
          closed: 3n * n,
          connectFailures: 2n * n,
          ejections: 1n * n,
        });
        const state = BackendStateCodec.decode(upgraded.maps.backendState.lookup(memberKey)!);
        expect(state.service_id).toBe(idOf('10.96.0.43', 80));
        expect(readServiceCounters(upgraded.maps, idOf('10.96.0.43', 80), [member])).toMatchObject({
          connects: 10n * n,
          noBackend: 4n * n,
          connectFailures: 2n * n,
        });
        for (const { name } of retiredCounters) expect(existsSync(join(box.bpffsDir, name))).toBe(false);
      } finally {
        upgraded.close();
        // Later tests load more instances over this pin root: it points at the attached maps again.
        rmSync(v2Pin, { force: true });
        current.pin(v2Pin);
        for (const { name, map } of currentCounters) {
          rmSync(join(box.bpffsDir, name), { force: true });
          map.pin(join(box.bpffsDir, name));
        }
      }
    });

    it('refuses a change past a capacity with an error naming the setting, writing nothing', async () => {
      const small = resolveLbSettings({ maxServices: 4, maxBackends: 8, reclaimGraceMs: 0 });
      const pinRoot = join(box.bpffsDir, 'small');
      mkdirSync(pinRoot, { recursive: true });
      const tiny = SocketLb.load(bpf, { objectDir: OBJECT_DIR, pinRoot, settings: small, reaper: false });
      try {
        expect(tiny.maps.services.lookupBatch().keys).toHaveLength(0);
        const five = Array.from({ length: 5 }, (_, i) => service(`10.98.0.${i + 1}`, 80, [tcp('a')]));
        await expect(tiny.datapath.sync(five)).rejects.toThrow(LbCapacityError);
        await expect(tiny.datapath.sync(five)).rejects.toThrow(/lb\.maxServices/);
        // 9 backends over two services: the second service would be cut short, so nothing is written
        const nine = [
          service('10.98.0.1', 80, [tcp('a'), tcp('b'), tcp('c'), tcp('d')]),
          service('10.98.0.2', 80, [
            ...NAMES.map((n) => ({ ...tcp(n), port: 9000 })),
            { address: V4.a, port: 9001 },
          ]),
        ];
        await expect(tiny.datapath.sync(nine)).rejects.toThrow(/lb\.maxBackends/);
        expect(tiny.maps.services.lookupBatch().keys).toHaveLength(0);
        expect(tiny.maps.backends.lookupBatch().keys).toHaveLength(0);
        expect(tiny.maps.slots.lookupBatch().keys).toHaveLength(0);
      } finally {
        tiny.close();
      }
    });

    it('programs 10 000 services and serves them', async () => {
      const many: ServiceSpec[] = [];
      for (let i = 0; i < 10_000; i++) {
        many.push(service(`10.97.${i >> 8}.${i & 255}`, 80, [tcp('a'), tcp('b'), tcp('c')]));
      }
      const result = await lb.datapath.sync(many);
      expect(result.plan.summary.servicesAdded).toBe(10_000);
      expect(lb.maps.services.lookupBatch().keys).toHaveLength(10_000);
      for (const i of [0, 4321, 9999]) {
        const vip = `10.97.${i >> 8}.${i & 255}`;
        const { totals } = await runLbClient(box, ns, `${vip}:80`, { count: 6, summary: true });
        expect(totals.errors).toBe(0);
        expect(totals.peers).toEqual({ [`${vip}:80`]: 6 });
      }
      const cleared = await lb.datapath.sync([]);
      expect(cleared.plan.summary.servicesRemoved).toBe(10_000);
      expect(lb.maps.services.lookupBatch().keys).toHaveLength(0);
      expect(lb.maps.slots.lookupBatch().keys).toHaveLength(0);
    });
  });

  describe('per-socket record (socket table, socket storage past it)', () => {
    const table = () => lb.sockLb.map(LbMaps.sockTable);
    /** Live entries of the socket table for one VIP:port (decoded). */
    const liveRecords = (vip: string, port: number) => {
      const vipBytes = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, ...vip.split('.').map(Number)]);
      return table()
        .lookupBatch()
        .values.map((v) => SockSlotCodec.decode(v))
        .filter((e) => e.cookie !== 0n && e.sock.port === port && Buffer.from(e.sock.addr).equals(vipBytes));
    };
    const settle = async (check: () => boolean) => {
      for (let i = 0; i < 50 && !check(); i++) await sleep(20);
    };

    it('keeps each live translated socket in the socket table and frees the entry when the socket is done', async () => {
      expect(table().info().maxEntries).toBe(LB_SOCK_TABLE_SIZE);
      await lb.datapath.sync([
        service('10.96.0.70', 80, [tcp('a')]),
        service('10.96.0.71', 53, [udp('a')], { protocol: 'udp' }),
        service('10.96.0.72', 80, [{ address: DEAD[0]!, port: PORT }], { ejection: { threshold: 0 } }),
      ]);
      const idA = backendId('10.96.0.70', 80, V4.a, PORT);
      const holder = startLbClient(box, ns, '10.96.0.70:80', { count: 20, hold: true, summary: true });
      const held = await holder.totals;
      expect(held.peers).toEqual({ '10.96.0.70:80': 20 });
      const live = liveRecords('10.96.0.70', 80);
      expect(live).toHaveLength(20);
      expect(new Set(live.map((e) => e.cookie)).size).toBe(20);
      expect(new Set(live.map((e) => e.sock.backend_id))).toEqual(new Set([idA]));
      expect(readBackendCounters(lb.maps, idA).active).toBe(20n);
      await holder.stop();
      await settle(() => liveRecords('10.96.0.70', 80).length === 0);
      expect(liveRecords('10.96.0.70', 80)).toHaveLength(0);
      expect(readBackendCounters(lb.maps, idA).active).toBe(0n);
      // Connected UDP: the record shows the VIP as the peer and ends with the socket (sock_release).
      const udpRun = await runLbClient(box, ns, '10.96.0.71:53', { proto: 'udp-connected', count: 10 });
      expect(udpRun.totals.peers).toEqual({ '10.96.0.71:53': 10 });
      await settle(() => liveRecords('10.96.0.71', 53).length === 0);
      expect(liveRecords('10.96.0.71', 53)).toHaveLength(0);
      // A refused connect ends in SYN_SENT -> CLOSE: sockops counts the failure and frees the entry.
      const refused = await runLbClient(box, ns, '10.96.0.72:80', { count: 3 });
      expect(refused.totals.codes).toEqual({ ECONNREFUSED: 3 });
      const deadId = backendId('10.96.0.72', 80, DEAD[0]!, PORT);
      expect(readBackendCounters(lb.maps, deadId).connectFailures).toBe(3n);
      await settle(() => liveRecords('10.96.0.72', 80).length === 0);
      expect(liveRecords('10.96.0.72', 80)).toHaveLength(0);
    });

    it('falls back to socket storage when the socket table has no free entry', async () => {
      // Every entry taken by a cookie no socket has: each connect must use socket storage.
      const n = LB_SOCK_TABLE_SIZE;
      const keys = Buffer.alloc(4 * n);
      for (let i = 0; i < n; i++) keys.writeUInt32LE(i, 4 * i);
      const full = Buffer.alloc(SockSlotCodec.size * n);
      for (let i = 0; i < n; i++) full.writeBigUInt64LE(1n << 62n, SockSlotCodec.size * i);
      table().updateBatch(keys, full, n);
      try {
        await lb.datapath.sync([service('10.96.0.73', 80, [tcp('b')], { algorithm: 'least-connections' })]);
        const idB = backendId('10.96.0.73', 80, V4.b, PORT);
        const holder = startLbClient(box, ns, '10.96.0.73:80', { count: 5, hold: true, summary: true });
        const held = await holder.totals;
        expect(held.peers).toEqual({ '10.96.0.73:80': 5 });
        expect(readBackendCounters(lb.maps, idB).active).toBe(5n);
        expect(liveRecords('10.96.0.73', 80)).toHaveLength(0);
        await holder.stop();
        await settle(() => readBackendCounters(lb.maps, idB).active === 0n);
        expect(readBackendCounters(lb.maps, idB).active).toBe(0n);
      } finally {
        table().updateBatch(keys, Buffer.alloc(SockSlotCodec.size * n), n);
      }
      // Entries free again: the next connect is back in the table.
      const holder = startLbClient(box, ns, '10.96.0.73:80', { count: 2, hold: true, summary: true });
      await holder.totals;
      expect(liveRecords('10.96.0.73', 80)).toHaveLength(2);
      await holder.stop();
    });
  });

  describe('outlier ejection and stale sockets', () => {
    const ejection = { threshold: 3, baseMs: 1500, maxMs: 10_000, maxEjectionPercent: 50 };

    it('ejects a backend after N refused connects and takes it back after the ejection time', async () => {
      const dead: BackendSpec = { address: DEAD[0]!, port: PORT };
      await lb.datapath.sync([service('10.96.0.50', 80, [tcp('a'), tcp('b'), dead], { ejection })]);
      const deadId = backendId('10.96.0.50', 80, DEAD[0]!, PORT);
      const first = await runLbClient(box, ns, '10.96.0.50:80', { count: 60 });
      // sequential connects: exactly the threshold fail, then the dead backend is out
      expect(first.totals.codes).toEqual({ ECONNREFUSED: 3 });
      expect(first.attempts.slice(-30).every((a) => a.ok)).toBe(true);
      const counters = readBackendCounters(lb.maps, deadId);
      expect(counters.ejections).toBe(1n);
      expect(counters.connectFailures).toBe(3n);
      expect(readServiceCounters(lb.maps, idOf('10.96.0.50', 80), []).ejections).toBe(1n);
      await sleep(ejection.baseMs + 200);
      // back in rotation: picked again, fails again, ejected again (for 2 × base this time)
      const second = await runLbClient(box, ns, '10.96.0.50:80', { count: 60 });
      expect(second.totals.codes).toEqual({ ECONNREFUSED: 3 });
      expect(readBackendCounters(lb.maps, deadId).ejections).toBe(2n);
    });

    it('keeps a floor of backends in use: never ejects past the max-ejection percentage', async () => {
      const backends: BackendSpec[] = [tcp('a'), ...DEAD.map((address) => ({ address, port: PORT }))];
      await lb.datapath.sync([service('10.96.0.51', 80, backends, { ejection })]);
      const { totals } = await runLbClient(box, ns, '10.96.0.51:80', { count: 120, summary: true });
      expect(totals.ok).toBeGreaterThan(0);
      const now = process.hrtime.bigint();
      const ejected = DEAD.filter(
        (address) =>
          readBackendCounters(lb.maps, backendId('10.96.0.51', 80, address, PORT)).ejectedUntilNs > now,
      );
      // 4 members at 50%: two may be out; the third dead one stays in use and keeps failing
      expect(ejected).toHaveLength(2);
      expect(totals.codes.ECONNREFUSED ?? 0).toBeGreaterThan(6);
      expect(readServiceCounters(lb.maps, idOf('10.96.0.51', 80), []).ejections).toBe(2n);
    });

    it('optionally resets established TCP connections to a removed backend (off by default)', async () => {
      const established = (address: string): number =>
        ns
          .exec(['ss', '-Htn', 'state', 'established', 'dst', `${address}:${PORT}`])
          .split('\n')
          .filter(Boolean).length;
      await lb.datapath.sync([service('10.96.0.55', 80, [tcp('a')])]);
      const holder = startLbClient(box, ns, '10.96.0.55:80', { count: 3, hold: true, summary: true });
      expect((await holder.totals).names).toEqual({ a: 3 });
      expect(established(V4.a)).toBe(3);
      // default: removing the backend leaves established connections alone (they drain)
      await lb.datapath.sync([service('10.96.0.55', 80, [tcp('b')])]);
      await lb.scheduleReap();
      expect(established(V4.a)).toBe(3);
      lb.reapTcp = true;
      try {
        expect(await lb.reapStale()).toBe(3);
        expect(established(V4.a)).toBe(0);
      } finally {
        lb.reapTcp = false;
        await holder.stop();
      }
    });

    it('destroys a connected UDP socket whose backend left, so the client reconnects to a live one', async () => {
      expect(lb.reaperAvailable).toBe(true);
      await lb.datapath.sync([service('10.96.0.54', 53, [udp('a')], { protocol: 'udp' })]);
      const client = startLbClient(box, ns, '10.96.0.54:53', {
        proto: 'udp-connected',
        persistent: true,
        intervalMs: 20,
        timeoutMs: 500,
      });
      for (let waited = 0; client.attempts.length < 4 && waited < 10_000; waited += 50) await sleep(50);
      expect(client.attempts.length).toBeGreaterThan(3);
      expect(client.attempts.every((a) => a.name === 'a')).toBe(true);
      const before = client.attempts.length;
      // a's server stays up: only the reaper can move this client
      await lb.datapath.sync([service('10.96.0.54', 53, [udp('b')], { protocol: 'udp' })]);
      for (
        let waited = 0;
        !client.attempts.slice(before).some((a) => a.name === 'b') && waited < 5000;
        waited += 50
      ) {
        await sleep(50);
      }
      await sleep(200);
      const { attempts } = await client.stop();
      const after = attempts.slice(before);
      const firstB = after.findIndex((a) => a.name === 'b');
      expect(firstB).toBeGreaterThanOrEqual(0);
      expect(after.slice(firstB).every((a) => a.name === 'b')).toBe(true);
      expect(after.some((a) => !a.ok)).toBe(true);
    });
  });
});
