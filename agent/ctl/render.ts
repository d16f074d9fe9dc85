/** Tables for sluicectl (cli-table3). Pure: a view in, text out. */
import Table from 'cli-table3';
import type { BackendView, DataplaneView, ServiceView } from './view';

export interface RenderOptions {
  /** Colour the headers (a terminal); off for pipes and tests. */
  readonly color?: boolean;
}

function table(head: string[], options: RenderOptions): Table.Table {
  return new Table({
    head,
    style: { head: options.color ? ['cyan'] : [], border: options.color ? ['grey'] : [] },
  });
}

/** `10.96.0.10:80`, `[fd00::10]:80`. */
export function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function share(backend: BackendView, service: ServiceView): string {
  const total = service.backends.reduce((sum, b) => sum + b.connects, 0);
  return total === 0 ? '-' : `${((100 * backend.connects) / total).toFixed(1)}%`;
}

export function ejectionText(backend: BackendView): string {
  if (backend.ejected) return `ejected ${(backend.ejectedForMs / 1000).toFixed(1)}s`;
  if (backend.consecutiveFailures > 0) return `${backend.consecutiveFailures} failed`;
  return '-';
}

function policy(service: ServiceView): string {
  const parts = [service.algorithm];
  if (service.affinity) parts.push(`affinity ${service.affinityTimeoutS}s`);
  parts.push(service.ejectThreshold > 0 ? `eject@${service.ejectThreshold}` : 'no-eject');
  return parts.join(', ');
}

export function renderServices(view: DataplaneView, options: RenderOptions = {}): string {
  if (view.services.length === 0) return `no services in ${view.bpffs}\n`;
  const t = table(
    ['VIP:port', 'proto', 'id', 'policy', 'backends', 'in rotation', 'connects', 'failed', 'no backend'],
    options,
  );
  for (const s of view.services) {
    const inRotation = s.backends.filter((b) => b.rotation === 'in-rotation').length;
    t.push([
      hostPort(s.vip, s.port),
      s.protocol,
      s.id,
      policy(s),
      s.backends.length,
      s.slots === 0 ? '0 (fails fast)' : inRotation,
      s.connects,
      s.connectFailures,
      s.noBackend,
    ]);
  }
  return `${t.toString()}\n`;
}

export function renderBackends(view: DataplaneView, options: RenderOptions = {}): string {
  if (view.services.length === 0) return `no services in ${view.bpffs}\n`;
  const t = table(
    [
      'service',
      'backend',
      'id',
      'weight',
      'health',
      'ejection',
      'active conns',
      'connects',
      'share',
      'failed',
    ],
    options,
  );
  for (const s of view.services) {
    for (const b of s.backends) {
      const health = b.state === 'draining' ? 'draining' : b.rotation;
      t.push([
        hostPort(s.vip, s.port),
        `${hostPort(b.address, b.port)}${b.local ? ' (local)' : ''}`,
        b.id,
        b.weight,
        health,
        ejectionText(b),
        b.activeConnections,
        b.connects,
        share(b, s),
        b.connectFailures,
      ]);
    }
  }
  return `${t.toString()}\n`;
}

export function renderMaps(view: DataplaneView, options: RenderOptions = {}): string {
  const t = table(['map', 'type', 'key', 'value', 'entries', 'capacity', 'used'], options);
  for (const m of view.maps) {
    const used =
      m.entries === null || m.maxEntries === 0 ? '-' : `${((100 * m.entries) / m.maxEntries).toFixed(1)}%`;
    t.push([m.name, m.type, m.keySize, m.valueSize, m.entries ?? 'n/a', m.maxEntries, used]);
  }
  return `${t.toString()}\n`;
}

export function renderStatus(view: DataplaneView, options: RenderOptions = {}): string {
  const backends = view.services.reduce((n, s) => n + s.backends.length, 0);
  const ejected = view.services.reduce((n, s) => n + s.backends.filter((b) => b.ejected).length, 0);
  const active = view.services.reduce(
    (n, s) => n + s.backends.reduce((a, b) => a + b.activeConnections, 0),
    0,
  );
  const t = table(['', ''], options);
  t.push(
    ['bpffs', view.bpffs],
    ['attached programs', view.links.length === 0 ? 'none (not installed)' : view.links.length],
    ['services', view.services.length],
    ['backends', backends],
    ['ejected backends', ejected],
    ['active connections', active],
    ['pinned maps', view.maps.length],
  );
  const lines = [t.toString()];
  if (view.links.length > 0) {
    const links = table(['attached to', 'object', 'program', 'link pin'], options);
    for (const l of view.links) links.push([l.attachedTo, l.object, l.program, l.pin]);
    lines.push(links.toString());
  }
  return `${lines.join('\n')}\n`;
}
