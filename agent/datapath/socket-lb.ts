/**
 * Loads and attaches the socket-LB objects: sock_lb (cgroup connect/sendmsg/recvmsg/getpeername),
 * sockops (active counts, outlier ejection) and, when the kernel has bpf_sock_destroy, sock_reaper (the
 * stale connected-UDP reaper; a failed load is logged and the datapath runs without it). All share one
 * set of maps pinned by name under `pinRoot`, sized by the capacity settings.
 */
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { BpfLink, BpfObject, NativeBpf } from '../../native/types';
import { SocketLbDatapath } from './datapath';
import type { LbMapSet } from './lb-maps';
import { migrateRetiredLbMaps } from './migrate';
import { type LbSettings, lbMapMaxEntries } from './settings';
import { createBpfDatapathWriter, lbMapSetFromObject } from './writer-bpf';

export interface SocketLbLogger {
  warn(obj: object, msg: string): void;
  info?(obj: object, msg: string): void;
}

export interface LoadSocketLbOptions {
  /** directory holding sock_lb.bpf.o, sockops.bpf.o, sock_reaper.bpf.o */
  objectDir: string;
  /** bpffs directory for the map pins */
  pinRoot: string;
  settings: LbSettings;
  /** `const volatile` globals of sock_lb.bpf.o (e.g. lb_sock_storage, for measurements only) */
  globals?: Record<string, Buffer>;
  /** load the stale-socket reaper (default true) */
  reaper?: boolean;
  /** also reset established TCP connections to removed backends (default false: they drain) */
  reapTcp?: boolean;
  /**
   * Network namespaces (paths such as /run/netns/x) whose UDP sockets the reaper also walks; a BPF
   * socket iterator sees only the namespace it is read from, so these are read through nsenter.
   */
  reapNetns?: string[];
  log?: SocketLbLogger;
}

export const SOCK_LB_PROGRAMS = [
  'sluice_connect4',
  'sluice_connect6',
  'sluice_sendmsg4',
  'sluice_sendmsg6',
  'sluice_recvmsg4',
  'sluice_recvmsg6',
  'sluice_getpeername4',
  'sluice_getpeername6',
  'sluice_sock_release',
] as const;

let pinCounter = 0;

type ReapProtocol = 'udp' | 'tcp';
const execFileAsync = promisify(execFile);
const countLines = (out: string): number => out.split('\n').filter(Boolean).length;

export class SocketLb {
  private constructor(
    private readonly bpf: NativeBpf,
    readonly sockLb: BpfObject,
    readonly sockops: BpfObject,
    readonly reaper: BpfObject | undefined,
    readonly maps: LbMapSet,
    readonly datapath: SocketLbDatapath,
    private readonly reaperPins: Partial<Record<ReapProtocol, string>>,
    /** extra namespaces the reaper walks (see LoadSocketLbOptions.reapNetns) */
    readonly reapNetns: string[],
  ) {}

  static load(bpf: NativeBpf, options: LoadSocketLbOptions): SocketLb {
    const load = { pinRoot: options.pinRoot, mapMaxEntries: lbMapMaxEntries(options.settings) };
    const sockLb = bpf.loadObject(join(options.objectDir, 'sock_lb.bpf.o'), {
      ...load,
      ...(options.globals ? { globals: options.globals } : {}),
    });
    let sockops: BpfObject | undefined;
    let reaper: BpfObject | undefined;
    try {
      migrateRetiredLbMaps(bpf, options.pinRoot, sockLb);
      sockops = bpf.loadObject(join(options.objectDir, 'sockops.bpf.o'), load);
      if (options.reaper !== false) {
        try {
          reaper = bpf.loadObject(join(options.objectDir, 'sock_reaper.bpf.o'), load);
        } catch (error) {
          options.log?.warn(
            { err: error },
            'stale-UDP reaper unavailable (bpf_sock_destroy needs kernel 6.5+): connected UDP sockets to removed backends stay open',
          );
        }
      }
    } catch (error) {
      sockops?.close();
      sockLb.close();
      throw error;
    }
    const maps = lbMapSetFromObject(sockLb, bpf.possibleCpus());
    const writer = createBpfDatapathWriter(maps, options.settings);
    const holder: { lb?: SocketLb } = {};
    const datapath = new SocketLbDatapath(writer, options.settings, () => {
      holder.lb?.scheduleReap(options.log);
    });
    // The iterators are pinned so processes in other namespaces can read (run) them.
    const reaperPins: Partial<Record<ReapProtocol, string>> = {};
    if (reaper) {
      const tag = `${process.pid}_${++pinCounter}`;
      for (const protocol of ['udp', 'tcp'] as const) {
        const link = reaper.program(`sluice_reap_${protocol}`).attachIter();
        const path = join(options.pinRoot, `sluice_lb_reap_${protocol}_link_${tag}`);
        try {
          link.pin(path);
        } finally {
          link.close();
        }
        reaperPins[protocol] = path;
      }
    }
    holder.lb = new SocketLb(bpf, sockLb, sockops, reaper, maps, datapath, reaperPins, [
      ...(options.reapNetns ?? []),
    ]);
    holder.lb.reapTcp = options.reapTcp === true;
    return holder.lb;
  }

  /** Attaches every hook to a cgroup v2 directory; the caller owns (pins or closes) the links. */
  attach(cgroupPath: string): BpfLink[] {
    const links: BpfLink[] = [];
    try {
      for (const name of SOCK_LB_PROGRAMS) links.push(this.sockLb.program(name).attachCgroup(cgroupPath));
      links.push(this.sockops.program('sluice_sockops').attachCgroup(cgroupPath));
    } catch (error) {
      for (const link of links) link.close();
      throw error;
    }
    return links;
  }

  get reaperAvailable(): boolean {
    return this.reaper !== undefined;
  }

  /** Whether reaping also resets established TCP connections to removed backends (default false). */
  reapTcp = false;

  /**
   * Destroys stale sockets now (connected UDP, and TCP when reapTcp), in this namespace and in
   * reapNetns; returns how many (undefined: no reaper). A namespace that cannot be entered is logged
   * and skipped.
   */
  async reapStale(log?: SocketLbLogger): Promise<number | undefined> {
    if (!this.reaper) return undefined;
    let destroyed = 0;
    for (const protocol of this.reapTcp ? (['udp', 'tcp'] as const) : (['udp'] as const)) {
      const pin = this.reaperPins[protocol]!;
      const link = this.bpf.openPinnedLink(pin);
      try {
        destroyed += countLines(this.bpf.runIter(link).toString('utf8'));
      } finally {
        link.close();
      }
      const others = await Promise.all(this.reapNetns.map((netns) => this.reapOtherNetns(pin, netns, log)));
      destroyed += others.reduce((a, b) => a + b, 0);
    }
    return destroyed;
  }

  private reapRunning: Promise<void> | undefined;
  private reapAgain = false;

  /**
   * Runs the reaper soon, off the sync path; removals that land while one runs coalesce into one more
   * run. Resolves when the namespaces have been walked.
   */
  scheduleReap(log?: SocketLbLogger): Promise<void> {
    if (!this.reaper) return Promise.resolve();
    if (this.reapRunning) {
      this.reapAgain = true;
      return this.reapRunning;
    }
    const run = async (): Promise<void> => {
      do {
        this.reapAgain = false;
        await new Promise((r) => setImmediate(r));
        try {
          const destroyed = await this.reapStale(log);
          if (destroyed) log?.info?.({ destroyed }, 'destroyed sockets still aimed at removed backends');
        } catch (error) {
          log?.warn({ err: error }, 'stale-socket reaper run failed');
        }
      } while (this.reapAgain);
      this.reapRunning = undefined;
    };
    this.reapRunning = run();
    return this.reapRunning;
  }

  private async reapOtherNetns(pin: string, netns: string, log?: SocketLbLogger): Promise<number> {
    try {
      const { stdout } = await execFileAsync('nsenter', [`--net=${netns}`, 'cat', pin], {
        encoding: 'utf8',
        timeout: 5000,
      });
      return countLines(stdout);
    } catch (error) {
      log?.warn({ err: error, netns }, 'stale-socket reaper could not walk a namespace');
      return 0;
    }
  }

  close(): void {
    for (const pin of Object.values(this.reaperPins)) rmSync(pin, { force: true });
    this.reaper?.close();
    this.sockops.close();
    this.sockLb.close();
  }
}
