/**
 * Loads and attaches the socket-LB objects: sock_lb (cgroup connect/sendmsg/recvmsg/getpeername),
 * sockops (active counts, outlier ejection) and, when the kernel has bpf_sock_destroy, sock_reaper (the
 * stale connected-UDP reaper; a failed load is logged and the datapath runs without it). All share one
 * set of maps pinned by name under `pinRoot`, sized by the capacity settings.
 */
import { join } from 'node:path';
import type { BpfLink, BpfObject, NativeBpf } from '../../native/types';
import { SocketLbDatapath } from './datapath';
import type { LbMapSet } from './lb-maps';
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
  /** load the stale-UDP reaper (default true) */
  reaper?: boolean;
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
] as const;

export class SocketLb {
  private constructor(
    private readonly bpf: NativeBpf,
    readonly sockLb: BpfObject,
    readonly sockops: BpfObject,
    readonly reaper: BpfObject | undefined,
    readonly maps: LbMapSet,
    readonly datapath: SocketLbDatapath,
  ) {}

  static load(bpf: NativeBpf, options: LoadSocketLbOptions): SocketLb {
    const load = { pinRoot: options.pinRoot, mapMaxEntries: lbMapMaxEntries(options.settings) };
    const sockLb = bpf.loadObject(join(options.objectDir, 'sock_lb.bpf.o'), load);
    let sockops: BpfObject | undefined;
    let reaper: BpfObject | undefined;
    try {
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
      holder.lb?.reapStaleUdp();
    });
    holder.lb = new SocketLb(bpf, sockLb, sockops, reaper, maps, datapath);
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

  /** Destroys connected UDP sockets whose backend left its service; returns how many (undefined: no reaper). */
  reapStaleUdp(): number | undefined {
    if (!this.reaper) return undefined;
    const link = this.reaper.program('sluice_reap_udp').attachIter();
    try {
      return this.bpf.runIter(link).toString('utf8').split('\n').filter(Boolean).length;
    } finally {
      link.close();
    }
  }

  close(): void {
    this.reaper?.close();
    this.sockops.close();
    this.sockLb.close();
  }
}
