import { randomBytes } from 'node:crypto';
import type { Backend, Catalog, Service } from './catalog/types';
import type { Clock } from './clock';
import { diffCatalogs } from './diff';
import {
  type BackendHealth,
  type ControllerMessage,
  toWireService,
  type WireDelta,
  type WireService,
} from './protocol';

/** A new catalog version and the delta that leads to it from the previous one. */
export interface StoreChange {
  readonly version: number;
  readonly delta: WireDelta;
  /** `{ delta }`, one object for every agent so it is encoded once. */
  readonly message: ControllerMessage;
}

interface Entry {
  readonly service: Service;
  readonly wire: WireService;
  /** Version at which this service last changed. */
  readonly version: number;
}

interface LogEntry {
  readonly version: number;
  readonly at: number;
  readonly keys: readonly string[];
}

export interface CatalogStoreOptions {
  readonly clock: Clock;
  /** Current merged health of a backend (from the health aggregator). */
  readonly health: (serviceKey: string, backend: Backend) => BackendHealth;
  /** Random when omitted; versions are only comparable within one epoch. */
  readonly epoch?: string;
  /** Versions kept in the change log for incremental resyncs (older agents get a snapshot). */
  readonly maxLog?: number;
}

/**
 * The versioned catalog as agents see it: the current catalog with health merged in, one content revision
 * per service, and a bounded change log so a reconnecting agent gets only what changed. Every change
 * (catalog or health) gets the next version.
 */
export class CatalogStore {
  readonly epoch: string;
  private currentVersion = 0;
  private current: Catalog | null = null;
  private readonly entries = new Map<string, Entry>();
  private readonly log: LogEntry[] = [];
  private readonly maxLog: number;
  private snapshotCache: { version: number; message: ControllerMessage & { snapshot: unknown } } | null =
    null;

  constructor(private readonly options: CatalogStoreOptions) {
    this.epoch = options.epoch ?? randomBytes(8).toString('hex');
    this.maxLog = options.maxLog ?? 1024;
  }

  get version(): number {
    return this.currentVersion;
  }

  get catalog(): Catalog | null {
    return this.current;
  }

  get domain(): string {
    return this.current?.domain ?? '';
  }

  get size(): number {
    return this.entries.size;
  }

  service(key: string): Service | undefined {
    return this.entries.get(key)?.service;
  }

  wireService(key: string): WireService | undefined {
    return this.entries.get(key)?.wire;
  }

  /** When a version was created (for push-to-ACK latency), if it is still in the log. */
  versionTime(version: number): number | undefined {
    for (let i = this.log.length - 1; i >= 0; i--) {
      const entry = this.log[i]!;
      if (entry.version === version) return entry.at;
      if (entry.version < version) break;
    }
    return undefined;
  }

  /** Installs a new catalog; returns the change, or null when nothing changed. */
  setCatalog(catalog: Catalog): StoreChange | null {
    const diff = diffCatalogs(this.current, catalog);
    const domainChanged = this.current !== null && this.current.domain !== catalog.domain;
    this.current = catalog;
    if (diff.upserts.length === 0 && diff.deletes.length === 0 && !domainChanged) return null;
    // A domain change touches every service (DNS names change): resend them all.
    const changed = domainChanged ? catalog.services : diff.upserts;
    return this.commit(changed, diff.deletes);
  }

  /** Rebuilds the given services with their current health; returns the change, or null if none differs. */
  refreshHealth(keys: Iterable<string>): StoreChange | null {
    const changed: Service[] = [];
    for (const key of keys) {
      const entry = this.entries.get(key);
      if (!entry) continue;
      const wire = toWireService(entry.service, (b) => this.options.health(key, b));
      if (wire.revision !== entry.wire.revision) changed.push(entry.service);
    }
    return changed.length === 0 ? null : this.commit(changed, []);
  }

  private commit(upserts: readonly Service[], deletes: readonly string[]): StoreChange {
    const version = ++this.currentVersion;
    const wires: WireService[] = [];
    for (const service of upserts) {
      const wire = toWireService(service, (b) => this.options.health(service.key, b));
      this.entries.set(service.key, { service, wire, version });
      wires.push(wire);
    }
    for (const key of deletes) this.entries.delete(key);
    if (this.current && upserts.length > 0) this.reorder();
    this.log.push({
      version,
      at: this.options.clock.now(),
      keys: [...upserts.map((s) => s.key), ...deletes],
    });
    if (this.log.length > this.maxLog) this.log.shift();
    const delta: WireDelta = {
      epoch: this.epoch,
      version,
      baseVersion: version - 1,
      domain: this.domain,
      upserts: wires,
      deletes: [...deletes],
    };
    return { version, delta, message: { delta } };
  }

  /** Keeps the entries in catalog order so snapshots list services as the file does. */
  private reorder(): void {
    const services = this.current?.services ?? [];
    let inOrder = services.length === this.entries.size;
    if (inOrder) {
      let i = 0;
      for (const key of this.entries.keys()) {
        if (services[i++]?.key !== key) {
          inOrder = false;
          break;
        }
      }
    }
    if (inOrder) return;
    const copy = new Map(this.entries);
    this.entries.clear();
    for (const s of services) {
      const entry = copy.get(s.key);
      if (entry) this.entries.set(s.key, entry);
    }
  }

  /** The full catalog at the current version (one cached object per version, encoded once). */
  snapshotMessage(): ControllerMessage {
    if (this.snapshotCache?.version !== this.currentVersion) {
      const services: WireService[] = [];
      for (const entry of this.entries.values()) services.push(entry.wire);
      this.snapshotCache = {
        version: this.currentVersion,
        message: {
          snapshot: { epoch: this.epoch, version: this.currentVersion, domain: this.domain, services },
        },
      };
    }
    return this.snapshotCache.message;
  }

  /** What changed since `base` (same epoch), or null when the log no longer reaches back that far. */
  deltaSince(base: number): WireDelta | null {
    if (base <= 0 || base > this.currentVersion) return null;
    const upserts: WireService[] = [];
    const deletes: string[] = [];
    if (base < this.currentVersion) {
      const first = this.log[0];
      if (!first || first.version > base + 1) return null;
      const keys = new Set<string>();
      for (const entry of this.log) if (entry.version > base) for (const key of entry.keys) keys.add(key);
      for (const key of keys) {
        const entry = this.entries.get(key);
        if (entry) upserts.push(entry.wire);
        else deletes.push(key);
      }
    }
    return {
      epoch: this.epoch,
      version: this.currentVersion,
      baseVersion: base,
      domain: this.domain,
      upserts,
      deletes,
    };
  }

  /** What differs from an agent's list of (key, revision): works across controller restarts. */
  deltaFromRevisions(base: number, revisions: ReadonlyMap<string, string>): WireDelta {
    const upserts: WireService[] = [];
    const deletes: string[] = [];
    for (const [key, entry] of this.entries)
      if (revisions.get(key) !== entry.wire.revision) upserts.push(entry.wire);
    for (const key of revisions.keys()) if (!this.entries.has(key)) deletes.push(key);
    return {
      epoch: this.epoch,
      version: this.currentVersion,
      baseVersion: base,
      domain: this.domain,
      upserts,
      deletes,
    };
  }
}
