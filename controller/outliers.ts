import type { Logger } from 'pino';
import type { Counter, Gauge } from 'prom-client';
import { normaliseIp } from './catalog/address';
import type { Catalog, Service } from './catalog/types';
import type { WireOutlierEjection } from './protocol';

/**
 * The kernel's passive (outlier) ejections as each agent reports them (HealthReport.outliers).
 *
 * Outlier ejection is a per-client-host view (as in Envoy and Linkerd): one node's kernel ejects a backend
 * after connects *from that node* failed. The controller therefore only records and shows these reports,
 * per node; it never merges them into a backend's health, never pushes them to other agents, and never
 * changes probe ownership because of them. What is recorded:
 * - one entry per (node, service, VIP:port/protocol, backend) while that node's kernel ejects the backend;
 *   an "ended" report removes it, so does the node's disconnect (its agent re-sends what is still ejected
 *   when it reconnects) and the backend leaving the catalog;
 * - only backends of the current catalog (service key, address, and a port the backend serves on), so what
 *   an agent sends cannot create metric series for things that do not exist.
 */

export interface OutlierEjectionStatus {
  readonly node: string;
  readonly service: string;
  /** address:port connections go to ([v6]:port). */
  readonly backend: string;
  /** The service VIP:port/protocol the kernel ejected it from. */
  readonly frontend: string;
  /** When the controller heard of it (ISO time). */
  readonly reportedAt: string;
  /** When the ejection ends unless it is extended (ISO time), from the time left the agent saw. */
  readonly ejectedUntil: string;
  readonly consecutiveFailures: number;
  readonly consecutiveEjections: number;
  readonly ejections: number;
  readonly reason: string;
}

export interface OutlierOutcome {
  readonly ejected: number;
  readonly ended: number;
  /** Not a backend of the current catalog. */
  readonly ignored: number;
}

export interface OutlierTrackerOptions {
  /** 1 per service port on which the node's kernel currently ejects the backend (labels node, service, backend). */
  readonly gauge: Gauge<'node' | 'service' | 'backend'>;
  /** Reports by result: ejected, ended, ignored. */
  readonly reports: Counter<'result'>;
  readonly logger: Logger;
  /** Wall-clock milliseconds (default Date.now). */
  readonly wallNow?: () => number;
}

const SERVICE_KEY = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const MAX_REASON = 512;

function label(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * Checks one reported ejection's shape. Returns the first problem, naming the field
 * (`health.outliers[1].port: must be an integer from 1 to 65535`), or null. Pure.
 */
export function validateOutlier(o: WireOutlierEjection, index: number): string | null {
  const at = `health.outliers[${index}]`;
  if (!SERVICE_KEY.test(o.service)) return `${at}.service: '${o.service}' is not a namespace/name key`;
  if (normaliseIp(o.address) === null) return `${at}.address: '${o.address}' is not an IP address`;
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535)
    return `${at}.port: must be an integer from 1 to 65535`;
  if (normaliseIp(o.vip) === null) return `${at}.vip: '${o.vip}' is not an IP address`;
  if (!Number.isInteger(o.vipPort) || o.vipPort < 1 || o.vipPort > 65535)
    return `${at}.vipPort: must be an integer from 1 to 65535`;
  if (o.protocol !== 'TCP' && o.protocol !== 'UDP') return `${at}.protocol: must be TCP or UDP`;
  if (o.reason.length > MAX_REASON) return `${at}.reason: longer than ${MAX_REASON} characters`;
  if (o.ejected && o.reason === '') return `${at}.reason: required when ejected is true`;
  return null;
}

export class OutlierTracker {
  private catalog: Catalog | null = null;
  /** The catalog's services by key, built when first needed after a catalog change (reports are rare). */
  private byKey: Map<string, Service> | null = null;
  /** node|service|frontend|backend → what the node reported. */
  private readonly records = new Map<string, OutlierEjectionStatus>();
  private readonly wallNow: () => number;
  private readonly log: Logger;

  constructor(private readonly options: OutlierTrackerOptions) {
    this.wallNow = options.wallNow ?? Date.now;
    this.log = options.logger.child({ component: 'outliers' });
  }

  /** A new catalog: entries for backends that left it are dropped. */
  setCatalog(catalog: Catalog): void {
    this.catalog = catalog;
    this.byKey = null;
    for (const [key, r] of this.records) {
      const service = this.service(r.service);
      const at = r.backend.lastIndexOf(':');
      const address = r.backend.slice(0, at).replace(/^\[|\]$/g, '');
      if (!service || !this.serves(service, address, Number(r.backend.slice(at + 1)))) this.drop(key, r);
    }
  }

  private service(key: string): Service | undefined {
    this.byKey ??= new Map(this.catalog?.services.map((s) => [s.key, s]));
    return this.byKey.get(key);
  }

  /** Records a node's reports (already validated with validateOutlier). */
  report(node: string, outliers: readonly WireOutlierEjection[]): OutlierOutcome {
    let ejected = 0;
    let ended = 0;
    let ignored = 0;
    for (const o of outliers) {
      const address = normaliseIp(o.address)!;
      const service = this.service(o.service);
      if (!service || !this.serves(service, address, o.port)) {
        ignored++;
        this.log.debug(
          { node, service: o.service, backend: label(address, o.port) },
          'ejection of an unknown backend ignored',
        );
        continue;
      }
      const backend = label(address, o.port);
      const frontend = `${label(normaliseIp(o.vip)!, o.vipPort)}/${o.protocol}`;
      const key = `${node}|${o.service}|${frontend}|${backend}`;
      if (o.ejected) {
        ejected++;
        const now = this.wallNow();
        const record: OutlierEjectionStatus = {
          node,
          service: o.service,
          backend,
          frontend,
          reportedAt: new Date(now).toISOString(),
          ejectedUntil: new Date(now + o.ejectedForMs).toISOString(),
          consecutiveFailures: o.consecutiveFailures,
          consecutiveEjections: o.consecutiveEjections,
          ejections: o.ejections,
          reason: o.reason,
        };
        const known = this.records.has(key);
        this.records.set(key, record);
        this.options.reports.inc({ result: 'ejected' });
        if (!known) this.updateGauge(node, o.service, backend);
        this.log.warn(
          {
            node,
            service: o.service,
            backend,
            frontend,
            ejectedForMs: o.ejectedForMs,
            ejections: o.ejections,
            reason: o.reason,
          },
          'agent reports kernel ejected backend (a per-node view: health unchanged)',
        );
      } else {
        ended++;
        this.options.reports.inc({ result: 'ended' });
        const record = this.records.get(key);
        if (record) {
          this.drop(key, record);
          this.log.info(
            { node, service: o.service, backend, frontend },
            'agent reports kernel ejection ended',
          );
        }
      }
    }
    if (ignored > 0) this.options.reports.inc({ result: 'ignored' }, ignored);
    return { ejected, ended, ignored };
  }

  /** The node's stream ended: its view goes with it (the agent re-sends it on reconnect). */
  agentDisconnected(node: string): void {
    for (const [key, r] of this.records) if (r.node === node) this.drop(key, r);
  }

  /** Current ejections, by node, service, backend and frontend. */
  list(): OutlierEjectionStatus[] {
    return [...this.records.values()].sort((a, b) =>
      `${a.node}|${a.service}|${a.backend}|${a.frontend}`.localeCompare(
        `${b.node}|${b.service}|${b.backend}|${b.frontend}`,
      ),
    );
  }

  private serves(service: Service, address: string, port: number): boolean {
    return service.backends.some(
      (b) =>
        b.address === address &&
        (b.port !== null ? b.port === port : service.ports.some((p) => p.targetPort === port)),
    );
  }

  private drop(key: string, r: OutlierEjectionStatus): void {
    this.records.delete(key);
    this.updateGauge(r.node, r.service, r.backend);
  }

  private updateGauge(node: string, service: string, backend: string): void {
    let count = 0;
    for (const r of this.records.values())
      if (r.node === node && r.service === service && r.backend === backend) count++;
    if (count === 0) this.options.gauge.remove({ node, service, backend });
    else this.options.gauge.set({ node, service, backend }, count);
  }
}
