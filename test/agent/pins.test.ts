/**
 * The agent's pins, on real BPF in a sandbox cgroup: install attaches every socket-LB program through a
 * pinned link; closing the agent's fds (what SIGTERM does) leaves connects translated; a second install
 * (a restarted agent) adopts the links with bpf_link_update and traffic keeps flowing; sluicectl decodes
 * the pinned maps without the agent; uninstall detaches everything and removes every pin it made.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { ipToBytes16 } from '../../agent/abi/ip';
import {
  BackendCodec,
  IPPROTO_TCP,
  LB_BACKEND_ACTIVE,
  LB_SLOT_MEMBER_BIT,
  LbAlgorithm,
  LbMaps,
  ServiceCodec,
  ServiceKeyCodec,
  SlotKeyCodec,
} from '../../agent/abi/lb';
import { main as sluicectl } from '../../agent/ctl/main';
import { type Installed, install, uninstall } from '../../agent/pins';
import { bpf } from '../../native';
import { runClient, startEchoServer } from '../fixtures/tcp';
import { describePrivileged } from '../support/privileged';
import { createSandbox, type Sandbox } from '../support/sandbox';

const ROOT = resolve(__dirname, '../..');
const OBJECTS = ['build/bpf/sock_lb.bpf.o', 'build/bpf/sockops.bpf.o'].map((p) => ({ path: join(ROOT, p) }));
const VIP = '10.96.0.10';

function attachedPrograms(cgroup: string): string[] {
  const out = execFileSync('bpftool', ['-j', 'cgroup', 'show', cgroup], { encoding: 'utf8' }).trim();
  return (out ? (JSON.parse(out) as Array<{ name: string }>) : []).map((p) => p.name).sort();
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/** One TCP service VIP:80 → 127.0.0.1:port with one backend (id 7), written straight into the maps. */
function programService(installed: Installed, port: number): void {
  const backendId = 7;
  installed.map(LbMaps.backends).update(
    u32(backendId),
    BackendCodec.encode({
      addr: ipToBytes16('127.0.0.1'),
      port,
      weight: 1,
      state: LB_BACKEND_ACTIVE,
      flags: 0,
      service_id: 1,
    }),
  );
  const slots = installed.map(LbMaps.slots);
  slots.update(SlotKeyCodec.encode({ service_id: 1, index: 0 }), u32(backendId));
  slots.update(SlotKeyCodec.encode({ service_id: 1, index: LB_SLOT_MEMBER_BIT }), u32(backendId));
  installed.map(LbMaps.services).update(
    ServiceKeyCodec.encode({ addr: ipToBytes16(VIP), port: 80, proto: IPPROTO_TCP }),
    ServiceCodec.encode({
      id: 1,
      algorithm: LbAlgorithm.weighted,
      flags: 0,
      generation: 0,
      max_eject_pct: 50,
      slot_count: 1,
      backend_count: 1,
      affinity_timeout_s: 0,
      eject_threshold: 3,
      eject_base_ms: 5000,
      eject_max_ms: 300000,
      inline_slots: [],
    }),
  );
}

let sandbox: Sandbox | undefined;
afterEach(async () => {
  await sandbox?.cleanup();
  sandbox = undefined;
});

describePrivileged('agent pins', () => {
  it('installs, survives the agent closing, adopts on restart, shows in sluicectl, uninstalls', async () => {
    sandbox = createSandbox('agent-pins');
    const sb = sandbox;
    const ns = sb.netns();
    const server = await startEchoServer(sb, { netns: ns, host: '127.0.0.1' });

    const first = install(bpf, { bpffsDir: sb.bpffsDir, cgroupPath: sb.cgroupPath, objects: OBJECTS });
    expect(first.adopted).toBe(false);
    expect(first.events.every((e) => e.action === 'attached')).toBe(true);
    const programs = first.events.map((e) => e.program).sort();
    expect(programs).toContain('sluice_connect4');
    expect(programs).toContain('sluice_sockops');
    expect(attachedPrograms(sb.cgroupPath)).toEqual(programs);
    for (const e of first.events) expect(existsSync(e.pin)).toBe(true);
    programService(first, server.port);

    const viaVip = () => runClient(sb, VIP, 80, { netns: ns, inCgroup: true });
    expect(await viaVip()).toMatchObject({ remoteAddress: VIP, echoed: 1 });

    // The agent goes away (SIGTERM or kill -9): only its fds close; the pins hold the data plane.
    first.close();
    expect(attachedPrograms(sb.cgroupPath)).toEqual(programs);
    expect(await viaVip()).toMatchObject({ remoteAddress: VIP, echoed: 1 });

    // A restarted agent adopts: same links, fresh programs behind them, maps (and the service) kept.
    const second = install(bpf, { bpffsDir: sb.bpffsDir, cgroupPath: sb.cgroupPath, objects: OBJECTS });
    expect(second.adopted).toBe(true);
    // Every link reopened from its pin and bpf_link_update()d: the hooks never detach.
    expect(second.events.map((e) => e.action)).toEqual(programs.map(() => 'adopted'));
    expect(attachedPrograms(sb.cgroupPath)).toEqual(programs);
    expect(await viaVip()).toMatchObject({ remoteAddress: VIP, echoed: 1 });
    second.close();

    // sluicectl reads it back from the pins, with no agent running.
    const out: string[] = [];
    const io = { out: (t: string) => out.push(t), err: (t: string) => out.push(t), color: false };
    expect(await sluicectl(['backends', '--json', '--bpffs', sb.bpffsDir], io, () => bpf)).toBe(0);
    const rows = JSON.parse(out.join('')) as Array<{
      service: { vip: string; port: number };
      address: string;
      port: number;
      connects: number;
      rotation: string;
    }>;
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      service: { vip: VIP, port: 80 },
      address: '127.0.0.1',
      port: server.port,
      rotation: 'in-rotation',
    });
    expect(rows[0]?.connects).toBe(3);
    out.length = 0;
    expect(await sluicectl(['status', '--bpffs', sb.bpffsDir], io, () => bpf)).toBe(0);
    expect(out.join('')).toMatch(/attached programs\s*│\s*10/);
    out.length = 0;
    expect(await sluicectl(['maps', '--json', '--bpffs', sb.bpffsDir], io, () => bpf)).toBe(0);
    const maps = JSON.parse(out.join('')) as Array<{
      name: string;
      entries: number | null;
      maxEntries: number;
    }>;
    expect(maps.find((m) => m.name === LbMaps.services)).toMatchObject({ entries: 1, maxEntries: 65536 });
    expect(maps.find((m) => m.name === LbMaps.slots)?.entries).toBe(2);

    // Uninstall: nothing attached, no pin left.
    const result = uninstall(bpf, { bpffsDir: sb.bpffsDir, cgroupPath: sb.cgroupPath });
    expect(result.detached).toHaveLength(programs.length);
    expect(attachedPrograms(sb.cgroupPath)).toEqual([]);
    expect(existsSync(sb.bpffsDir)).toBe(false);
    const after = await viaVip();
    expect(after.remoteAddress).toBeUndefined();
    // A second uninstall finds nothing to do.
    expect(uninstall(bpf, { bpffsDir: sb.bpffsDir, cgroupPath: sb.cgroupPath }).detached).toEqual([]);
  });
});
