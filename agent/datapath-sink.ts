/**
 * DataplaneSink implementations for the node agent: the in-memory one (unit tests, and running the agent
 * without BPF), and the status reader shared by the BPF-backed one, which decodes the pinned maps.
 */
import type { NativeBpf } from '../native/types';
import { programmedKey } from './agent-sync';
import { readDataplane } from './ctl/read';
import type { DataplaneChange, DataplaneSink, KernelBackendStatus, ProgrammedService } from './node-agent';

/** Holds what was applied; no kernel behind it, so no status to read back. */
export class MemorySink implements DataplaneSink {
  /** By VIP|port|protocol. */
  private current = new Map<string, ProgrammedService>();
  /** Writes of any kind (apply or update). */
  applies = 0;
  /** Of those, incremental ones. */
  updates = 0;

  constructor(private readonly validate?: (services: readonly ProgrammedService[]) => void) {}

  apply(services: readonly ProgrammedService[]): void {
    this.validate?.(services);
    this.current = new Map(services.map((s) => [programmedKey(s), s]));
    this.applies++;
  }

  update(change: DataplaneChange): void {
    const next = new Map(this.current);
    for (const ref of change.remove) next.delete(programmedKey(ref));
    for (const s of change.upsert) next.set(programmedKey(s), s);
    this.validate?.([...next.values()]);
    this.current = next;
    this.applies++;
    this.updates++;
  }

  services(): readonly ProgrammedService[] {
    return [...this.current.values()];
  }

  readStatus(): readonly KernelBackendStatus[] {
    return [];
  }
}

/**
 * The sink with listeners fed every plan once it has landed (the fast path's local endpoints, the XDP
 * balancer's external IPs): each gets the whole set of services programmed after the write.
 */
export function afterEachPlan(
  sink: DataplaneSink,
  ...listeners: ReadonlyArray<(services: readonly ProgrammedService[]) => void>
): DataplaneSink {
  const notify = (services: readonly ProgrammedService[]) => {
    for (const listener of listeners) listener(services);
  };
  return {
    async apply(services) {
      await sink.apply(services);
      notify(services);
    },
    ...(sink.update
      ? {
          async update(change: DataplaneChange) {
            await sink.update?.(change);
            notify(change.services());
          },
        }
      : {}),
    readStatus: () => sink.readStatus(),
    ...(sink.mapUsage ? { mapUsage: () => sink.mapUsage?.() ?? [] } : {}),
  };
}

/** Entries against capacity of the pinned hash maps under `bpffs`. */
export function readMapUsage(
  bpf: NativeBpf,
  bpffs: string,
): { name: string; entries: number; capacity: number }[] {
  return readDataplane(bpf, bpffs)
    .maps.filter((m) => m.entries !== null)
    .map((m) => ({ name: m.name, entries: m.entries ?? 0, capacity: m.maxEntries }));
}

/** Every backend's kernel state, decoded from the pinned maps under `bpffs`. */
export function readKernelStatus(bpf: NativeBpf, bpffs: string): KernelBackendStatus[] {
  const view = readDataplane(bpf, bpffs, { membership: false });
  const out: KernelBackendStatus[] = [];
  for (const service of view.services) {
    for (const b of service.backends) {
      out.push({
        vip: service.vip,
        port: service.port,
        protocol: service.protocol,
        address: b.address,
        backendPort: b.port,
        ejected: b.ejected,
        ejectedForMs: b.ejectedForMs,
        consecutiveFailures: b.consecutiveFailures,
        consecutiveEjections: b.consecutiveEjections,
        ejections: b.ejections,
        connects: b.connects,
        connectFailures: b.connectFailures,
        activeConnections: b.activeConnections,
      });
    }
  }
  return out;
}
