import { describe, expect, it } from 'vitest';
import { jsonFor, main, renderFor } from '../../agent/ctl/main';
import { ejectionText, hostPort } from '../../agent/ctl/render';
import type { BackendView, DataplaneView } from '../../agent/ctl/view';
import { objectName, pinLayout } from '../../agent/pins';

function backend(id: number, over: Partial<BackendView> = {}): BackendView {
  return {
    id,
    address: `10.0.1.${id}`,
    port: 8080,
    weight: id,
    state: 'active',
    local: false,
    rotation: 'in-rotation',
    ejected: false,
    ejectedForMs: 0,
    consecutiveFailures: 0,
    consecutiveEjections: 0,
    activeConnections: id * 2,
    connects: id * 100,
    connectFailures: 0,
    ejections: 0,
    ...over,
  };
}

const view: DataplaneView = {
  bpffs: '/sys/fs/bpf/sluice',
  services: [
    {
      id: 1,
      vip: '10.96.0.10',
      port: 80,
      protocol: 'TCP',
      algorithm: 'weighted',
      affinity: false,
      affinityTimeoutS: 0,
      ejectThreshold: 3,
      ejectBaseMs: 5000,
      maxEjectPercent: 50,
      slots: 1024,
      connects: 600,
      connectFailures: 3,
      noBackend: 0,
      ejections: 1,
      backends: [
        backend(1),
        backend(2, { local: true }),
        backend(3, { ejected: true, ejectedForMs: 4200, consecutiveFailures: 3, rotation: 'in-rotation' }),
      ],
    },
    {
      id: 2,
      vip: 'fd00::10',
      port: 53,
      protocol: 'UDP',
      algorithm: 'round-robin',
      affinity: true,
      affinityTimeoutS: 10800,
      ejectThreshold: 0,
      ejectBaseMs: 0,
      maxEjectPercent: 0,
      slots: 0,
      connects: 0,
      connectFailures: 0,
      noBackend: 7,
      ejections: 0,
      backends: [backend(4, { address: 'fd00::4', state: 'draining', rotation: 'out' })],
    },
  ],
  maps: [
    {
      name: 'sluice_lb_services_v2',
      pin: '/x',
      type: 'hash',
      keySize: 20,
      valueSize: 24,
      maxEntries: 65536,
      entries: 2,
    },
  ],
  links: [],
};

describe('sluicectl tables', () => {
  it('shows VIP:port, policy, weights, health, ejection, active connections and shares', () => {
    const services = renderFor('services', view, false);
    expect(services).toContain('10.96.0.10:80');
    expect(services).toContain('[fd00::10]:53');
    expect(services).toContain('weighted, eject@3');
    expect(services).toContain('round-robin, affinity 10800s, no-eject');
    expect(services).toContain('0 (fails fast)');
    const backends = renderFor('backends', view, false);
    const row = (needle: string) => backends.split('\n').find((line) => line.includes(needle)) ?? '';
    expect(row('10.0.1.2:8080')).toContain('(local)');
    // share of connects: 200 of 600
    expect(row('10.0.1.2:8080')).toContain('33.3%');
    expect(row('10.0.1.3:8080')).toContain('ejected 4.2s');
    expect(row('[fd00::4]:8080')).toContain('draining');
    expect(renderFor('maps', view, false)).toMatch(/sluice_lb_services_v2.*65536.*0\.0%/);
    expect(renderFor('status', view, false)).toContain('none (not installed)');
  });

  it('gives scripts the same data as JSON', () => {
    const rows = jsonFor('backends', view) as Array<{
      service: { vip: string };
      address: string;
      weight: number;
    }>;
    expect(rows.map((r) => `${r.service.vip} ${r.address} ${r.weight}`)).toEqual([
      '10.96.0.10 10.0.1.1 1',
      '10.96.0.10 10.0.1.2 2',
      '10.96.0.10 10.0.1.3 3',
      'fd00::10 fd00::4 4',
    ]);
    const services = jsonFor('services', view) as Array<{ backendCount: number; backends?: unknown }>;
    expect(services.map((s) => s.backendCount)).toEqual([3, 1]);
    expect(services[0]?.backends).toBeUndefined();
  });

  it('formats addresses and ejection states', () => {
    expect(hostPort('::1', 80)).toBe('[::1]:80');
    expect(ejectionText(backend(1, { consecutiveFailures: 2 }))).toBe('2 failed');
    expect(ejectionText(backend(1))).toBe('-');
  });

  it('rejects bad usage with exit code 2 and the reason, and a missing bpffs with 1', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const io = { out: (t: string) => out.push(t), err: (t: string) => err.push(t), color: false };
    const never = () => {
      throw new Error('the addon must not load for a usage error');
    };
    expect(await main(['bogus'], io, never)).toBe(2);
    expect(err.join('')).toContain('unknown command "bogus"');
    expect(await main(['services', '--bpffs', 'relative'], io, never)).toBe(2);
    expect(err.join('')).toContain('--bpffs: must be an absolute path');
    expect(await main(['--help'], io, never)).toBe(0);
    expect(out.join('')).toContain('usage: sluicectl');
    const fakeBpf = () => ({}) as never;
    expect(await main(['status', '--bpffs', '/nonexistent/sluice'], io, fakeBpf)).toBe(1);
    expect(err.join('')).toContain('/nonexistent/sluice: no such directory');
  });
});

describe('pin layout', () => {
  it('keeps maps, per-cgroup links and programs apart', () => {
    const layout = pinLayout('/sys/fs/bpf/sluice');
    expect(layout.mapPin('sluice_lb_services_v2')).toBe('/sys/fs/bpf/sluice/maps/sluice_lb_services_v2');
    expect(layout.linkPin(196n, 'sock_lb', 'sluice_connect4')).toBe(
      '/sys/fs/bpf/sluice/links/cg-196/sock_lb/sluice_connect4',
    );
    expect(layout.programPin('sockops', 'sluice_sockops')).toBe(
      '/sys/fs/bpf/sluice/progs/sockops/sluice_sockops',
    );
    expect(objectName('/opt/sluice/build/bpf/sock_lb.bpf.o')).toBe('sock_lb');
  });
});
