/**
 * The XDP load balancer inside the agent (docs/operations.md, "XDP load balancer for external IPs"): with `--xdp-interface IFNAME` the
 * agent balances the catalog's external IPs for traffic arriving on that interface.
 *
 * - bpf/xdp_lb.bpf.o is loaded with its maps pinned by name in <bpffs>/maps (like the socket-LB maps), so
 *   a restarted agent finds the VIP ids, backend ids, Maglev tables and the connection table as they were.
 * - The program is attached through a bpf_link pinned at <bpffs>/links/if-<IFNAME>/xdp_lb/xdp_lb. A
 *   restarted agent swaps its new program into that link (bpf_link_update): the interface never runs
 *   without the balancer, and established flows keep their backends. `sluice-agent uninstall` detaches it
 *   with the other links; SIGTERM closes fds only.
 * - After every applied plan the services flagged `external` are written through XdpLoadBalancer: only
 *   the ones whose backends or states changed. Draining backends (unhealthy, ejected, outside the
 *   locality tier, weight 0) take no new flows and keep the ones they have.
 *
 * Without `--xdp-interface` the agent first detaches and unpins XDP links an earlier run left, so turning
 * the flag off really turns the balancer off.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { BpfLink, NativeBpf } from '../native/types';
import { XDP_LB_OBJECT, XDP_LB_PROGRAM } from './abi/xdp';
import type { AgentMetrics } from './metrics';
import type { ProgrammedService } from './node-agent';
import { linksOwner, objectName, pinLayout, removeLinksIn } from './pins';
import { XdpLoadBalancer, type XdpServiceSpec, xdpServiceKey } from './xdp/datapath';

/** The object's name in pin paths (pins.ts objectName of xdp_lb.bpf.o). */
const XDP_LB_OBJECT_NAME = objectName(XDP_LB_OBJECT);

/** Where bpf/xdp_lb.bpf.o is, relative to the package root. */
export const XDP_OBJECT_DIR = 'build/bpf';
export const XDP_MODES = ['auto', 'native', 'generic'] as const;
export type XdpAttachMode = (typeof XDP_MODES)[number];

/** Flow-hash seed used by every node unless told otherwise: nodes must agree for flows to survive a move. */
export const DEFAULT_XDP_HASH_SEED = 0x51c3_5eed;

/** The XDP balancer's view of an applied plan: the external IPs × ports with their backends. Pure. */
export function xdpServices(services: readonly ProgrammedService[]): XdpServiceSpec[] {
  const specs: XdpServiceSpec[] = [];
  for (const service of services) {
    if (!service.external) continue;
    specs.push({
      address: service.vip,
      port: service.port,
      protocol: service.protocol === 'TCP' ? 'tcp' : 'udp',
      backends: service.backends.map((backend) => ({
        address: backend.address,
        weight: backend.weight,
        state: backend.draining ? 'draining' : 'active',
      })),
    });
  }
  return specs;
}

/** The link pin for an interface, in the agent's pin layout. */
export function xdpLinkPin(bpffsDir: string, ifname: string): string {
  return join(pinLayout(bpffsDir).interfaceLinksDir(ifname), XDP_LB_OBJECT_NAME, XDP_LB_PROGRAM);
}

interface IpLink {
  readonly ifindex: number;
  readonly xdp?: { readonly mode?: number };
}

/**
 * The interface as netlink reports it in this process's network namespace (`ip -j -d link`; /sys/class/net
 * would show the namespace sysfs was mounted in, which is not ours under nsenter).
 */
export function interfaceLink(ifname: string): IpLink {
  let text: string;
  try {
    text = execFileSync('ip', ['-j', '-d', 'link', 'show', 'dev', ifname], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch {
    throw new Error(`--xdp-interface: no interface named ${ifname} in this network namespace`);
  }
  const [link] = JSON.parse(text) as IpLink[];
  if (!link) throw new Error(`--xdp-interface: no interface named ${ifname} in this network namespace`);
  return link;
}

/** The interface's first global IPv4 and IPv6 addresses: the outer source of encapsulated packets. */
export function interfaceSources(ifname: string): { encapSource4?: string; encapSource6?: string } {
  const addresses = networkInterfaces()[ifname] ?? [];
  const v4 = addresses.find((a) => a.family === 'IPv4' && !a.internal);
  const v6 = addresses.find((a) => a.family === 'IPv6' && !a.internal && !a.address.startsWith('fe80'));
  return {
    ...(v4 ? { encapSource4: v4.address } : {}),
    ...(v6 ? { encapSource6: v6.address } : {}),
  };
}

export interface AgentXdpOptions {
  readonly bpf: NativeBpf;
  readonly interface: string;
  readonly mode: XdpAttachMode;
  /** The agent's bpffs directory (pin layout root). */
  readonly bpffsDir: string;
  /** Directory holding xdp_lb.bpf.o. */
  readonly objectDir: string;
  readonly hashSeed: number;
  /** Maglev table size per external IP:port (a prime); the program's default when unset. */
  readonly tableSize?: number;
  /** Outer source addresses; the interface's own addresses when unset. */
  readonly encapSource4?: string;
  readonly encapSource6?: string;
  readonly log: Logger;
  readonly metrics?: AgentMetrics;
  /** How often the counters are copied into the metrics (default 1000 ms; 0: only on poll()). */
  readonly pollIntervalMs?: number;
}

/** What the agent holds of the XDP load balancer. */
export class AgentXdp {
  private lb: XdpLoadBalancer | undefined;
  private link: BpfLink | undefined;
  private attachedMode: 'native' | 'generic' | undefined;
  /** What each programmed external IP:port was last given (its backends as JSON), to write only what changed. */
  private readonly applied = new Map<string, { spec: XdpServiceSpec; backends: string }>();
  private pruned = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: AgentXdpOptions) {}

  /** native or generic once attached; undefined when the attach failed. */
  get mode(): 'native' | 'generic' | undefined {
    return this.attachedMode;
  }

  get loadBalancer(): XdpLoadBalancer | undefined {
    return this.lb;
  }

  /**
   * Loads and attaches (or adopts the pinned link of an earlier run). Never throws: a failure is logged,
   * leaves XDP off and shows as sluice_xdp_mode{mode="off"}; socket-LB keeps working.
   */
  start(): this {
    const { bpf, log, bpffsDir } = this.options;
    const ifname = this.options.interface;
    try {
      const iplink = interfaceLink(ifname);
      const ifindex = iplink.ifindex;
      const sources = {
        ...interfaceSources(ifname),
        ...(this.options.encapSource4 ? { encapSource4: this.options.encapSource4 } : {}),
        ...(this.options.encapSource6 ? { encapSource6: this.options.encapSource6 } : {}),
      };
      if (!sources.encapSource4 && !sources.encapSource6) {
        throw new Error(`--xdp-interface: ${ifname} has no IPv4 or IPv6 address to encapsulate from`);
      }
      const lb = XdpLoadBalancer.load(
        bpf,
        this.options.objectDir,
        {
          hashSeed: this.options.hashSeed,
          ...(this.options.tableSize ? { maglevSize: this.options.tableSize } : {}),
          ...sources,
        },
        { pinRoot: pinLayout(bpffsDir).mapsDir, logger: log },
      );
      const pin = xdpLinkPin(bpffsDir, ifname);
      if (existsSync(pin)) {
        // A restarted agent: the interface keeps running the old program until this swap.
        const link = bpf.openPinnedLink(pin);
        link.update(lb.object.program(XDP_LB_PROGRAM));
        this.link = link;
        // Its mode as the kernel reports it (an XDP link's info does not carry it): XDP_ATTACHED_SKB = 2 is
        // generic; DRV = 1 (and HW = 3) run in the driver.
        this.attachedMode = iplink.xdp?.mode === 2 ? 'generic' : 'native';
        log.info({ interface: ifname, pin, mode: this.attachedMode }, 'xdp: adopted the pinned link');
      } else {
        const link = lb.attach(ifindex, { mode: this.options.mode });
        mkdirSync(join(pin, '..'), { recursive: true });
        link.pin(pin);
        this.link = link;
        this.attachedMode = link.mode;
      }
      this.lb = lb;
      log.info({ interface: ifname, ifindex, mode: this.attachedMode, ...sources }, 'xdp load balancer on');
    } catch (error) {
      log.error({ interface: ifname, err: error }, 'xdp load balancer stays off');
      this.attachedMode = undefined;
    }
    this.options.metrics?.setXdpMode(this.attachedMode ?? 'off');
    const interval = this.options.pollIntervalMs ?? 1000;
    if (interval > 0 && this.lb) {
      this.timer = setInterval(() => this.poll(), interval);
      this.timer.unref();
    }
    return this;
  }

  /**
   * Writes the external IPs of an applied plan: new and changed ones set, gone ones deleted. A service the
   * balancer refuses (a full table) is logged and left as it was; it never rejects the catalog.
   */
  setServices(services: readonly ProgrammedService[]): void {
    const lb = this.lb;
    if (!lb) return;
    const desired = new Map(
      xdpServices(services).map((spec) => [xdpServiceKey(spec.address, spec.port, spec.protocol), spec]),
    );
    for (const [key, { spec }] of this.applied) {
      if (desired.has(key)) continue;
      lb.deleteService(spec.address, spec.port, spec.protocol);
      this.applied.delete(key);
    }
    for (const [key, spec] of desired) {
      const backends = JSON.stringify(spec.backends);
      if (this.applied.get(key)?.backends === backends) continue;
      try {
        lb.setService(spec);
        this.applied.set(key, { spec, backends });
      } catch (error) {
        this.options.log.error({ service: key, err: error }, 'xdp: could not program an external IP');
      }
    }
    if (!this.pruned) {
      // The first plan lists every external IP: backends restored from pins that none lists are freed.
      this.pruned = true;
      const freed = lb.pruneBackends();
      if (freed > 0) this.options.log.info({ freed }, 'xdp: freed backend slots no service lists');
    }
  }

  /** Copies the kernel counters into the metrics. */
  poll(): void {
    if (!this.lb) return;
    try {
      this.options.metrics?.observeXdpStats(this.lb.stats());
    } catch (error) {
      this.options.log.warn({ err: error }, 'could not read the xdp counters');
    }
  }

  /** Closes the agent's fds only: the pinned link and maps keep the balancer running (SIGTERM). */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.link?.close();
    this.link = undefined;
    this.lb?.close();
    this.lb = undefined;
  }
}

/**
 * What an agent started without `--xdp-interface` does to an earlier run's balancer: every pinned XDP
 * link is detached and unpinned (the maps stay pinned until `uninstall`). Returns the pins removed.
 */
export function removeXdpLinks(bpf: NativeBpf, bpffsDir: string): string[] {
  const layout = pinLayout(bpffsDir);
  const removed: string[] = [];
  for (const entry of existsSync(layout.linksDir) ? readdirSync(layout.linksDir) : []) {
    const owner = linksOwner(entry);
    if (owner.kind !== 'interface') continue;
    removed.push(...removeLinksIn(bpf, layout.interfaceLinksDir(owner.name)).detached);
  }
  return removed;
}
