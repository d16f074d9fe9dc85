/**
 * The BPF-backed DataplaneSink: converts the agent's programmed services into the socket-LB model
 * (agent/datapath/model.ts ServiceSpec) and hands them to the socket-LB datapath writer, which diffs them
 * against the pinned maps and writes the difference. Status is decoded from the same pinned maps.
 */
import type { Logger } from 'pino';
import type { BpfObject, NativeBpf } from '../native/types';
import { SocketLbDatapath } from './datapath/datapath';
import type { ServiceSpec } from './datapath/model';
import { type LbSettings, lbMapMaxEntries } from './datapath/settings';
import { createBpfDatapathWriter, lbMapSetFromObject } from './datapath/writer-bpf';
import { readKernelStatus, readMapUsage } from './datapath-sink';
import type { DataplaneChange, DataplaneSink, KernelBackendStatus, ProgrammedService } from './node-agent';
import type { Installed } from './pins';

/** The part of the socket-LB writer the agent uses. */
export interface SpecWriter {
  /** Makes the maps hold exactly these services; throws (naming the field) and writes nothing on error. */
  apply(specs: ServiceSpec[]): unknown;
  /** Changes only these services (SocketLbDatapath.update); throws and writes nothing on error. */
  update?(change: {
    upsert: ServiceSpec[];
    remove: { vip: string; port: number; protocol: 'tcp' | 'udp' }[];
  }): unknown;
}

const specProtocol = (protocol: ProgrammedService['protocol']): 'tcp' | 'udp' =>
  protocol === 'UDP' ? 'udp' : 'tcp';

/** The socket-LB model of what the agent programs. Pure. */
export function toServiceSpecs(services: readonly ProgrammedService[]): ServiceSpec[] {
  return services.map((s) => ({
    name: `${s.service} ${s.vip}:${s.port}/${s.protocol}`,
    vip: s.vip,
    port: s.port,
    protocol: specProtocol(s.protocol),
    algorithm: s.algorithm,
    ...(s.affinityTimeoutMs !== null
      ? { affinity: { timeoutSeconds: Math.max(1, Math.ceil(s.affinityTimeoutMs / 1000)) } }
      : {}),
    ejection: s.outlier
      ? {
          threshold: s.outlier.consecutiveFailures,
          baseMs: s.outlier.baseEjectionTimeMs,
          maxEjectionPercent: s.outlier.maxEjectionPercent,
        }
      : { threshold: 0 },
    backends: s.backends.map((b) => ({
      address: b.address,
      port: b.port,
      weight: b.weight,
      state: b.draining ? ('draining' as const) : ('active' as const),
      nodeLocal: b.local,
    })),
  }));
}

export class SocketLbSink implements DataplaneSink {
  constructor(
    private readonly writer: SpecWriter,
    private readonly bpf: NativeBpf,
    private readonly bpffs: string,
  ) {}

  async apply(services: readonly ProgrammedService[]): Promise<void> {
    await this.writer.apply(toServiceSpecs(services));
  }

  /** Only the changed services (the datapath's update(): work proportional to the change). */
  async update(change: DataplaneChange): Promise<void> {
    if (!this.writer.update) {
      await this.writer.apply(toServiceSpecs(change.services()));
      return;
    }
    await this.writer.update({
      upsert: toServiceSpecs(change.upsert),
      remove: change.remove.map((r) => ({ vip: r.vip, port: r.port, protocol: specProtocol(r.protocol) })),
    });
  }

  readStatus(): readonly KernelBackendStatus[] {
    return readKernelStatus(this.bpf, this.bpffs);
  }

  /** Map usage changes slowly: read every 10th call. */
  private usageCalls = 0;
  private usage: { name: string; entries: number; capacity: number }[] = [];
  mapUsage(): readonly { name: string; entries: number; capacity: number }[] {
    if (this.usageCalls++ % 10 === 0) this.usage = readMapUsage(this.bpf, this.bpffs);
    return this.usage;
  }
}

export interface SocketLbSinkOptions {
  readonly installed: Installed;
  readonly bpf: NativeBpf;
  readonly bpffs: string;
  readonly log: Logger;
  readonly settings: LbSettings;
  /** the sock_reaper object (stale connected-UDP sockets); a failed load is logged, never fatal. */
  readonly reaperObject?: string;
}

/**
 * The socket-LB writer over the installed objects' maps. The writer restores its state (ids, table halves)
 * from the maps, so an agent restarted on top of a live data plane changes nothing until the catalog does.
 */
export function createSocketLbSink(options: SocketLbSinkOptions): DataplaneSink & { close(): void } {
  const { bpf, installed, log, settings } = options;
  let reaper: BpfObject | undefined;
  if (options.reaperObject) {
    try {
      reaper = bpf.loadObject(options.reaperObject, {
        pinRoot: installed.layout.mapsDir,
        mapMaxEntries: lbMapMaxEntries(settings),
      });
    } catch (error) {
      log.warn(
        { err: error },
        'stale-UDP reaper unavailable (bpf_sock_destroy needs kernel 6.5+): connected UDP sockets to removed backends stay open',
      );
    }
  }
  const reap = () => {
    if (!reaper) return;
    const link = reaper.program('sluice_reap_udp').attachIter();
    try {
      const destroyed = bpf.runIter(link).toString('utf8').split('\n').filter(Boolean).length;
      if (destroyed > 0) log.info({ destroyed }, 'destroyed connected UDP sockets of removed backends');
    } catch (error) {
      log.warn({ err: error }, 'stale-UDP reaper failed');
    } finally {
      link.close();
    }
  };
  const maps = lbMapSetFromObject({ map: (name) => installed.map(name) }, bpf.possibleCpus());
  const datapath = new SocketLbDatapath(createBpfDatapathWriter(maps, settings), settings, reap);
  const sink = new SocketLbSink(datapath, bpf, options.bpffs);
  return Object.assign(sink, { close: () => reaper?.close() });
}
