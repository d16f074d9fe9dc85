/**
 * The same-node fast path inside the agent (docs/fastpath.md, "In the agent"): the `--fastpath` setting,
 * the kernel feature probe, attaching through the agent's pin life cycle, the node-local endpoints of every
 * applied plan, and the counters as metrics.
 *
 * Attachment reuses agent/pins.ts: bpf/fastpath.bpf.o is installed like the socket-LB objects, its maps
 * pinned by name in <bpffs>/maps, its sock_ops link and its sk_msg link (on the sockhash) pinned under
 * <bpffs>/links/cg-<id>/fastpath/. A restarted agent adopts both (bpf_link_update, maps untouched);
 * `sluice-agent uninstall` detaches them with everything else; SIGTERM closes fds only.
 *
 * Off means nothing attached: an agent started with `--fastpath off` (the default) first writes
 * `enabled = 0` into a pinned config map left by an earlier run, so live redirected connections move to
 * the normal path in order, then detaches and unpins the fast-path links. The maps stay pinned (sockets
 * leave the sockhash as they close; uninstall removes the pins).
 */
import { existsSync, readdirSync, rmdirSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { BpfMap, NativeBpf } from '../native/types';
import { FpConfigCodec } from './abi/fastpath';
import {
  type Endpoint,
  FASTPATH_RETIRED_MAPS,
  FastPath,
  type FastPathCounters,
  MAP_CONFIG,
  MAP_CONNS,
  MAP_SOCKS,
  probeFastPath,
} from './fastpath/fastpath';
import { type FastPathMode, type FastPathSettings, parseFastPathSettings } from './fastpath/settings';
import type { AgentMetrics } from './metrics';
import type { ProgrammedService } from './node-agent';
import {
  cgroupId,
  detachPinnedLink,
  type Installed,
  install,
  type LinkEvent,
  objectName,
  pinLayout,
} from './pins';

/** The compiled object, relative to the package root. */
export const FASTPATH_OBJECT_PATH = 'build/bpf/fastpath.bpf.o';

/** Settings for a `--fastpath` mode: off, or on with that scope; everything else at its default. */
export function fastPathSettingsFor(mode: FastPathMode): FastPathSettings {
  return parseFastPathSettings({ enabled: mode !== 'off', scope: mode === 'all' ? 'all' : 'mesh' });
}

/**
 * The node-local TCP backends of a plan: the endpoints whose connections may take the fast path in scope
 * `mesh`. Draining backends stay in (their connections still live). Pure; sorted and without duplicates.
 */
export function localEndpoints(services: readonly ProgrammedService[]): Endpoint[] {
  const seen = new Map<string, Endpoint>();
  for (const service of services) {
    if (service.protocol !== 'TCP') continue;
    for (const backend of service.backends) {
      if (!backend.local) continue;
      seen.set(`${backend.address}|${backend.port}`, { ip: backend.address, port: backend.port });
    }
  }
  return [...seen.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, e]) => e);
}

export interface AgentFastPathOptions {
  readonly bpf: NativeBpf;
  readonly mode: FastPathMode;
  /** The agent's bpffs directory (pin layout root). */
  readonly bpffsDir: string;
  /** The cgroup the agent manages. */
  readonly cgroupPath: string;
  /** Absolute path of fastpath.bpf.o. */
  readonly objectPath: string;
  readonly log: Logger;
  readonly metrics?: AgentMetrics;
  /** How often counters are copied into the metrics (default 1000 ms; 0: only on poll()). */
  readonly pollIntervalMs?: number;
}

/** What the agent holds of the fast path. */
export class AgentFastPath {
  private modeNow: FastPathMode = 'off';
  private reason: string | undefined;
  private installed: Installed | undefined;
  private fp: FastPath | undefined;
  private endpoints: Endpoint[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly log: Logger;

  constructor(private readonly options: AgentFastPathOptions) {
    this.log = options.log;
  }

  /** The mode in effect: 'off' also when the flag asked for on and the kernel or the load refused. */
  get mode(): FastPathMode {
    return this.modeNow;
  }

  /** Why the fast path is off although asked for (the probe's or the load's reason). */
  get unavailable(): string | undefined {
    return this.reason;
  }

  get fastPath(): FastPath | undefined {
    return this.fp;
  }

  /** What the last attach did with each link (attached, adopted, replaced); empty while off. */
  get linkEvents(): readonly LinkEvent[] {
    return this.installed?.events ?? [];
  }

  /** Applies the configured mode; never throws (a refusal is logged and leaves the fast path off). */
  start(): this {
    this.setMode(this.options.mode);
    const interval = this.options.pollIntervalMs ?? 1000;
    if (interval > 0) {
      this.timer = setInterval(() => this.poll(), interval);
      this.timer.unref();
    }
    return this;
  }

  /**
   * Switches at run time. Between `mesh` and `all` only the config map changes; to `off` the config turns
   * redirection off (live connections fall back in order) and the links are detached; from `off` the
   * kernel is probed and the object installed. Never throws: a refusal leaves it off with the reason.
   */
  setMode(mode: FastPathMode): void {
    this.reason = undefined;
    if (mode === 'off') {
      this.detach();
    } else if (this.fp) {
      this.fp.configure(fastPathSettingsFor(mode));
      this.modeNow = mode;
    } else {
      this.attach(mode);
    }
    this.options.metrics?.setFastPathMode(this.modeNow);
  }

  /** Feeds the node-local endpoints of an applied plan (kept while off, written once on). */
  setServices(services: readonly ProgrammedService[]): void {
    this.endpoints = localEndpoints(services);
    this.writeEndpoints();
  }

  /** Copies the kernel counters into the metrics. */
  poll(): FastPathCounters | undefined {
    if (!this.fp) return undefined;
    try {
      const counters = this.fp.counters();
      this.options.metrics?.observeFastPathCounters(counters);
      return counters;
    } catch (error) {
      this.log.warn({ err: error }, 'could not read the fast path counters');
      return undefined;
    }
  }

  /** Closes the agent's fds only: the pins keep the fast path working (what SIGTERM does). */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.release();
  }

  private release(): void {
    this.fp?.stop();
    this.fp = undefined;
    this.installed?.close();
    this.installed = undefined;
  }

  private writeEndpoints(): void {
    if (!this.fp) return;
    try {
      const [added, removed] = this.fp.setEndpoints(this.endpoints);
      if (added + removed > 0) {
        this.log.debug({ endpoints: this.endpoints.length, added, removed }, 'fast path endpoints');
      }
      this.options.metrics?.setFastPathEndpoints(this.endpoints.length);
    } catch (error) {
      // The fast path is an optimisation: a failure here never rejects a catalog.
      this.log.error({ err: error }, 'could not write the fast path endpoints');
    }
  }

  private attach(mode: Exclude<FastPathMode, 'off'>): void {
    const { bpf, bpffsDir, cgroupPath, objectPath } = this.options;
    const probe = probeFastPath(bpf, objectPath, bpffsDir);
    if (!probe.ok) {
      this.refuse(mode, `kernel feature probe failed: ${probe.reason}`);
      return;
    }
    const settings = fastPathSettingsFor(mode);
    let installed: Installed | undefined;
    try {
      installed = install(bpf, {
        bpffsDir,
        cgroupPath,
        objects: [
          {
            path: objectPath,
            options: {
              mapMaxEntries: {
                [MAP_SOCKS]: settings.maxSockets,
                [MAP_CONNS]: settings.maxSockets,
              },
            },
            sockmaps: { fp_msg: MAP_SOCKS },
          },
        ],
      });
      for (const name of FASTPATH_RETIRED_MAPS) rmSync(join(installed.layout.mapsDir, name), { force: true });
      const object = installed.objects[0];
      if (!object) throw new Error('fast path object not loaded');
      const fp = new FastPath({
        bpf,
        settings,
        cgroupPath,
        pinRoot: installed.layout.mapsDir,
        objectPath,
        object,
      });
      fp.start();
      this.installed = installed;
      this.fp = fp;
      this.modeNow = mode;
      this.log.info(
        {
          mode,
          adopted: installed.adopted,
          links: installed.events.map((e) => `${e.object}/${e.program}:${e.action}`),
        },
        'fast path on',
      );
      this.writeEndpoints();
    } catch (error) {
      installed?.close();
      this.refuse(mode, `could not attach: ${(error as Error).message}`);
    }
  }

  private refuse(mode: FastPathMode, reason: string): void {
    this.log.warn({ requested: mode, reason }, 'fast path stays off');
    this.removeLinks();
    this.modeNow = 'off';
    this.reason = reason;
  }

  private detach(): void {
    this.fp?.setEnabled(false);
    this.release();
    const removed = this.removeLinks();
    if (removed.length > 0) this.log.info({ detached: removed }, 'fast path off: links detached');
    this.modeNow = 'off';
  }

  /** Turns a pinned config off and detaches the fast path's pinned links for this cgroup; idempotent. */
  private removeLinks(): string[] {
    const { bpf, bpffsDir, cgroupPath, objectPath } = this.options;
    return removeFastPathLinks(bpf, { bpffsDir, cgroupPath, objectPath });
  }
}

function disablePinnedConfig(bpf: NativeBpf, path: string): void {
  if (!existsSync(path)) return;
  let map: BpfMap | undefined;
  try {
    map = bpf.openPinnedMap(path);
    const key = Buffer.alloc(4);
    const current = map.lookup(key);
    if (!current) return;
    const config = FpConfigCodec.decode(current);
    if (config.enabled === 0) return;
    map.update(key, FpConfigCodec.encode({ ...config, enabled: 0 }));
  } finally {
    map?.close();
  }
}

function entries(path: string): string[] {
  try {
    return readdirSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

/**
 * What `--fastpath off` does to an earlier run's fast path: `enabled = 0` in the pinned config map (so the
 * programs still running for live sockets pass everything to TCP), then the links of this cgroup are
 * detached and unpinned (and the program pins once no cgroup has fast-path links). Returns the link pins
 * it removed.
 */
export function removeFastPathLinks(
  bpf: NativeBpf,
  options: { bpffsDir: string; cgroupPath: string; objectPath: string },
): string[] {
  const layout = pinLayout(options.bpffsDir);
  const name = objectName(options.objectPath);
  const dir = join(layout.cgroupLinksDir(cgroupId(options.cgroupPath)), name);
  const links = entries(dir);
  if (links.length === 0) return [];
  disablePinnedConfig(bpf, layout.mapPin(MAP_CONFIG));
  const removed: string[] = [];
  for (const program of links) {
    const path = join(dir, program);
    detachPinnedLink(bpf, path);
    unlinkSync(path);
    removed.push(path);
  }
  rmdirSync(dir);
  const cgroupDir = layout.cgroupLinksDir(cgroupId(options.cgroupPath));
  if (entries(cgroupDir).length === 0) rmdirSync(cgroupDir);
  const stillUsed = entries(layout.linksDir).some((cg) => existsSync(join(layout.linksDir, cg, name)));
  if (!stillUsed) {
    const progs = join(layout.progsDir, name);
    for (const program of entries(progs)) unlinkSync(join(progs, program));
    if (existsSync(progs)) rmdirSync(progs);
  }
  return removed;
}
