/**
 * The same-node fast path at run time: loads bpf/fastpath.bpf.o (after a kernel feature probe), attaches
 * its sock_ops program to a cgroup and its sk_msg program to the sockhash, and turns redirection on and
 * off through the config map without detaching anything. Counters are summed over CPUs.
 *
 * Switching off is safe for live connections: the programs see `enabled = 0`, insert no new sockets and
 * move every redirected direction to the normal path for good, which keeps byte order (see the comment at
 * the top of bpf/fastpath.bpf.c).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../native';
import type { BpfLink, BpfMap, BpfObject, NativeBpf } from '../../native/types';
import {
  FP_SCOPE_ALL,
  FP_SCOPE_MESH,
  FpConfigCodec,
  FpEndpointKeyCodec,
  FpSockKeyCodec,
  FpStatsCodec,
} from '../abi/fastpath';
import { bytes16ToIp, ipToBytes16 } from '../abi/ip';
import type { FastPathSettings } from './settings';

export const FASTPATH_OBJECT = 'fastpath.bpf.o';
export const MAP_SOCKS = 'sluice_fp_socks_v1';
export const MAP_CONFIG = 'sluice_fp_config_v1';
export const MAP_STATS = 'sluice_fp_stats_v1';
export const MAP_ENDPOINTS = 'sluice_fp_endpoints_v1';
export const MAP_LISTENERS = 'sluice_fp_listeners_v1';
export const MAP_CONNS = 'sluice_fp_conns_v2';
/**
 * Maps earlier versions pinned and this one no longer uses (their layout changed): a starting agent unpins
 * them, and the kernel frees each once no attached program holds it.
 */
export const FASTPATH_RETIRED_MAPS = [
  'sluice_fp_state_v1',
  'sluice_fp_sockaddr_v1',
  'sluice_fp_conns_v1',
] as const;

export interface FastPathCounters {
  inserts: bigint;
  insertFailures: bigint;
  redirectedMsgs: bigint;
  redirectedBytes: bigint;
  fallbackMsgs: bigint;
  fallbackBytes: bigint;
  fallbackNoPeer: bigint;
  fallbackBackpressure: bigint;
  fallbackDisabled: bigint;
  fallbackPolicy: bigint;
  redirectErrors: bigint;
  stateFailures: bigint;
  skippedBlocking: bigint;
  fallbackBlocking: bigint;
  fallbackStreaming: bigint;
  leftMap: bigint;
}

export interface Endpoint {
  readonly ip: string;
  readonly port: number;
}

export interface ProbeResult {
  readonly ok: boolean;
  /** Why the fast path cannot run here (absent when ok). */
  readonly reason?: string;
}

export function defaultObjectPath(): string {
  return join(packageRoot(__dirname), 'build', 'bpf', FASTPATH_OBJECT);
}

/**
 * Kernel feature probe: BTF for CO-RE, and a load of the object without pins, which proves the verifier
 * accepts every helper it uses here (sockhash, sk_msg redirect, socket storage in sk_msg, probe reads)
 * and that struct sk_psock has the msg_tot_len field the backpressure bound reads.
 */
export function probeFastPath(
  bpf: NativeBpf,
  objectPath = defaultObjectPath(),
  bpffsDir = '/sys/fs/bpf',
): ProbeResult {
  if (!existsSync('/sys/kernel/btf/vmlinux'))
    return { ok: false, reason: 'kernel has no BTF (/sys/kernel/btf/vmlinux)' };
  if (!existsSync(objectPath)) return { ok: false, reason: `${objectPath} not built (make bpf)` };
  // The maps pin by name; a private pin root (bpffs names may not contain dots) keeps the probe's maps away from everyone else's.
  const pinRoot = join(bpffsDir, `sluice-fastpath-probe-${process.pid}-${randomBytes(3).toString('hex')}`);
  let object: BpfObject | undefined;
  try {
    mkdirSync(pinRoot, { recursive: true });
    object = bpf.loadObject(objectPath, { pinRoot, mapMaxEntries: { [MAP_SOCKS]: 2, [MAP_CONNS]: 2 } });
    const types = object.programs().map((p) => p.info().type);
    if (!types.includes('sock_ops') || !types.includes('sk_msg')) {
      return { ok: false, reason: `unexpected program types ${types.join(',')}` };
    }
    return { ok: true };
  } catch (err) {
    const e = err as Error & { code?: string };
    return {
      ok: false,
      reason: `kernel refused the fast path programs: ${e.code ?? ''} ${e.message}`.trim(),
    };
  } finally {
    object?.close();
    rmSync(pinRoot, { recursive: true, force: true });
  }
}

/** Every counter at zero: the start of a sum, and what an unloaded fast path reports. */
export const ZERO_FASTPATH_COUNTERS: Readonly<FastPathCounters> = Object.freeze({
  inserts: 0n,
  insertFailures: 0n,
  redirectedMsgs: 0n,
  redirectedBytes: 0n,
  fallbackMsgs: 0n,
  fallbackBytes: 0n,
  fallbackNoPeer: 0n,
  fallbackBackpressure: 0n,
  fallbackDisabled: 0n,
  fallbackPolicy: 0n,
  redirectErrors: 0n,
  stateFailures: 0n,
  skippedBlocking: 0n,
  fallbackBlocking: 0n,
  fallbackStreaming: 0n,
  leftMap: 0n,
});

function sumCounters(perCpu: Buffer[]): FastPathCounters {
  const total = { ...ZERO_FASTPATH_COUNTERS };
  for (const buf of perCpu) {
    const s = FpStatsCodec.decode(buf);
    total.inserts += s.inserts;
    total.insertFailures += s.insert_failures;
    total.redirectedMsgs += s.redirected_msgs;
    total.redirectedBytes += s.redirected_bytes;
    total.fallbackMsgs += s.fallback_msgs;
    total.fallbackBytes += s.fallback_bytes;
    total.fallbackNoPeer += s.fallback_no_peer;
    total.fallbackBackpressure += s.fallback_backpressure;
    total.fallbackDisabled += s.fallback_disabled;
    total.fallbackPolicy += s.fallback_policy;
    total.redirectErrors += s.redirect_errors;
    total.stateFailures += s.state_failures;
    total.skippedBlocking += s.skipped_blocking;
    total.fallbackBlocking += s.fallback_blocking;
    total.fallbackStreaming += s.fallback_streaming;
    total.leftMap += s.left_map;
  }
  return total;
}

export interface FastPathOptions {
  readonly bpf: NativeBpf;
  readonly settings: FastPathSettings;
  /** cgroup v2 directory whose sockets may take the fast path. */
  readonly cgroupPath: string;
  /** bpffs directory where the maps are pinned by name (and adopted from on a restart). */
  readonly pinRoot: string;
  readonly objectPath?: string;
  /**
   * The object already loaded (with its maps pinned) and its programs attached by the caller: the agent
   * does this through its pin life cycle (agent/pins.ts, agent/fastpath-wiring.ts) so links survive a
   * restart. start() then only writes the config; stop() leaves the links and the object to the caller.
   */
  readonly object?: BpfObject;
}

export class FastPath {
  private object: BpfObject | undefined;
  private links: BpfLink[] = [];
  private settings: FastPathSettings;

  constructor(private readonly options: FastPathOptions) {
    this.settings = options.settings;
  }

  /** Probes the kernel, loads and attaches. Throws with the probe's reason when the kernel cannot. */
  start(): void {
    if (this.object) return;
    if (this.options.object) {
      this.object = this.options.object;
      this.writeConfig();
      return;
    }
    const objectPath = this.options.objectPath ?? defaultObjectPath();
    const probe = probeFastPath(this.options.bpf, objectPath);
    if (!probe.ok) throw new Error(`fast path unavailable: ${probe.reason}`);
    mkdirSync(this.options.pinRoot, { recursive: true });
    const object = this.options.bpf.loadObject(objectPath, {
      pinRoot: this.options.pinRoot,
      mapMaxEntries: {
        [MAP_SOCKS]: this.settings.maxSockets,
        [MAP_CONNS]: this.settings.maxSockets,
      },
    });
    this.object = object;
    try {
      this.writeConfig();
      this.links.push(object.program('fp_msg').attachSockmap(object.map(MAP_SOCKS)));
      this.links.push(object.program('fp_sockops').attachCgroup(this.options.cgroupPath));
    } catch (err) {
      this.stop();
      throw err;
    }
  }

  /** Turns redirection on or off at run time (no detach: live connections fall back in order). */
  setEnabled(enabled: boolean): void {
    this.settings = { ...this.settings, enabled };
    this.writeConfig();
  }

  /** Applies new run-time settings (all but the capacity, which needs a reload). */
  configure(settings: FastPathSettings): void {
    if (settings.maxSockets !== this.settings.maxSockets && this.object) {
      throw new Error('fastpath.maxSockets: capacity changes need a restart of the fast path');
    }
    this.settings = settings;
    if (this.object) this.writeConfig();
  }

  get current(): FastPathSettings {
    return this.settings;
  }

  get enabled(): boolean {
    return this.settings.enabled;
  }

  /** Replaces the set of node-local mesh endpoints (scope 'mesh'); returns [added, removed]. */
  setEndpoints(endpoints: readonly Endpoint[]): [number, number] {
    const map = this.map(MAP_ENDPOINTS);
    const want = new Map(
      endpoints.map((e) => {
        if (!Number.isInteger(e.port) || e.port < 1 || e.port > 65535) {
          throw new RangeError(`endpoint ${e.ip}:${e.port}: port must be 1..65535`);
        }
        const key = FpEndpointKeyCodec.encode({ ip: ipToBytes16(e.ip), port: e.port });
        return [key.toString('hex'), key] as const;
      }),
    );
    const have = new Set(map.keys().map((k) => k.toString('hex')));
    let added = 0;
    let removed = 0;
    for (const [hex, key] of want) {
      if (!have.has(hex)) {
        map.update(key, Buffer.from([1]));
        added++;
      }
    }
    for (const hex of have) {
      if (!want.has(hex)) {
        map.delete(Buffer.from(hex, 'hex'));
        removed++;
      }
    }
    return [added, removed];
  }

  endpoints(): Endpoint[] {
    return this.map(MAP_ENDPOINTS)
      .keys()
      .map((k) => {
        const d = FpEndpointKeyCodec.decode(k);
        return { ip: bytes16ToIp(d.ip), port: d.port };
      });
  }

  counters(): FastPathCounters {
    return sumCounters(this.map(MAP_STATS).lookupPerCpu(Buffer.alloc(4)) ?? []);
  }

  /** Sockets in the sockhash now (each redirected connection holds two). */
  sockets(): { local: string; localPort: number; remote: string; remotePort: number }[] {
    return this.map(MAP_SOCKS)
      .keys()
      .map((k) => {
        const d = FpSockKeyCodec.decode(k);
        return {
          local: bytes16ToIp(d.local_ip),
          localPort: d.local_port,
          remote: bytes16ToIp(d.remote_ip),
          remotePort: d.remote_port,
        };
      });
  }

  map(name: string): BpfMap {
    if (!this.object) throw new Error('fast path not started');
    return this.object.map(name);
  }

  /** Detaches both programs and closes the object (pinned maps stay for a restart to adopt). */
  stop(): void {
    for (const link of this.links.reverse()) {
      try {
        link.detach();
      } finally {
        link.close();
      }
    }
    this.links = [];
    if (this.object !== this.options.object) this.object?.close();
    this.object = undefined;
  }

  private writeConfig(): void {
    const s = this.settings;
    this.map(MAP_CONFIG).update(
      Buffer.alloc(4),
      FpConfigCodec.encode({
        enabled: s.enabled ? 1 : 0,
        scope: s.scope === 'all' ? FP_SCOPE_ALL : FP_SCOPE_MESH,
        max_queued_bytes: s.maxQueuedBytes,
        max_msg_bytes: s.maxMessageBytes,
        allow_blocking: s.allowBlockingSockets ? 1 : 0,
        max_streak_msgs: s.maxStreakMessages,
        max_streak_bytes: s.maxStreakBytes,
        streak_exempt_bytes: s.streakExemptBytes,
      }),
    );
  }
}
