/**
 * The XDP load balancer's userspace side: loads bpf/xdp_lb.bpf.o with its settings, turns services
 * (VIP:port/protocol with weighted backends) into map entries, and attaches the program to an
 * interface — native XDP when the driver has it, generic otherwise, the mode logged.
 *
 * Write order keeps the datapath consistent at every step: a backend's slot is written before any table
 * names it; a new VIP's table is filled before the VIP entry appears; a removed VIP's entry goes first,
 * then its table. Draining and unhealthy backends leave the table (no new flows) but keep their slot, so
 * their flows in the connection table keep going; a backend no service lists any more loses its slot,
 * and its flows then take a fresh choice.
 */
import { rmSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { join } from 'node:path';
import type { BpfMap, BpfObject, NativeBpf, OpenObjectOptions, XdpLink, XdpMode } from '../../native/types';
import { bytes16ToIp, ipToBytes16, ipv4ToBytes } from '../abi/ip';
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  u32Buffer,
  vipFilterSlot,
  XDP_LB_AF_INET,
  XDP_LB_AF_INET6,
  XDP_LB_DEFAULTS,
  XDP_LB_OBJECT,
  XDP_LB_PROGRAM,
  XDP_LB_RETIRED_MAPS,
  XdpBackendCodec,
  XdpCounterCodec,
  XdpMaps,
  type XdpReasonName,
  XdpReasons,
  XdpVipCodec,
  XdpVipKeyCodec,
  xdpConnSets,
} from '../abi/xdp';
import { buildMaglevTable, isPrime } from './maglev';
import { BpfMaglevStore, MaglevTableWriter } from './table-writer';

export interface XdpLbConfig {
  /** Flow-hash and Maglev seed; the same on every node so every node picks the same backend. */
  readonly hashSeed: number;
  /** Maglev table size per VIP, a prime (default 65 537). */
  readonly maglevSize?: number;
  /** Most VIPs (each has its own table, so this also sizes the table array). */
  readonly maxVips?: number;
  readonly maxBackends?: number;
  /**
   * Connection-table capacity in flows: rounded up to a power-of-two number of sets of
   * XDP_LB_CONN_WAYS (LRU within each set).
   */
  readonly maxConns?: number;
  /** This node's IPv4 address, the outer source towards IPv4 backends. */
  readonly encapSource4?: string;
  /** This node's IPv6 address, the outer source towards IPv6 backends. */
  readonly encapSource6?: string;
  /** MAC of the next hop for encapsulated packets; unset: back to the MAC each packet came from. */
  readonly gatewayMac?: string;
}

export type XdpBackendState = 'active' | 'draining' | 'unhealthy';
export type XdpProtocol = 'tcp' | 'udp';

export interface XdpBackendSpec {
  /** Tunnel endpoint of the backend (it answers clients from the VIP itself). */
  readonly address: string;
  /** Relative weight, default 1; 0 takes no new flows. */
  readonly weight?: number;
  /** Only active backends take new flows; draining/unhealthy ones keep the flows they have. */
  readonly state?: XdpBackendState;
}

export interface XdpServiceSpec {
  readonly address: string;
  readonly port: number;
  readonly protocol: XdpProtocol;
  readonly backends: readonly XdpBackendSpec[];
}

export interface Counter {
  readonly packets: bigint;
  readonly bytes: bigint;
}

export interface XdpLbStats {
  readonly vips: ReadonlyArray<{ address: string; port: number; protocol: XdpProtocol } & Counter>;
  readonly backends: ReadonlyArray<{ address: string; id: number } & Counter>;
  readonly verdicts: Readonly<Record<XdpReasonName, Counter>>;
}

/** The pino subset used here (object first, message second). */
export interface XdpLogger {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
}

const silentLogger: XdpLogger = { info: () => {}, warn: () => {} };

interface ResolvedConfig {
  readonly hashSeed: number;
  readonly maglevSize: number;
  readonly maxVips: number;
  readonly maxBackends: number;
  readonly maxConns: number;
  readonly encapSource4?: string;
  readonly encapSource6?: string;
  readonly gatewayMac?: string;
}

function positiveInt(value: number, field: string, max = 0xffffffff): number {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new RangeError(`xdp.${field}: ${value} must be an integer in 1..${max}`);
  }
  return value;
}

function parseMac(mac: string): Buffer {
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)) {
    throw new RangeError(`xdp.gatewayMac: ${mac} is not a MAC address like 02:00:00:00:00:01`);
  }
  return Buffer.from(mac.split(':').map((part) => Number.parseInt(part, 16)));
}

/** Validates the settings once, with the defaults applied. */
export function resolveXdpConfig(config: XdpLbConfig): ResolvedConfig {
  if (!Number.isInteger(config.hashSeed) || config.hashSeed < 0 || config.hashSeed > 0xffffffff) {
    throw new RangeError(`xdp.hashSeed: ${config.hashSeed} must be a 32-bit unsigned integer`);
  }
  const maglevSize = config.maglevSize ?? XDP_LB_DEFAULTS.maglevSize;
  if (!isPrime(maglevSize)) throw new RangeError(`xdp.maglevSize: ${maglevSize} is not a prime`);
  const maxVips = positiveInt(config.maxVips ?? XDP_LB_DEFAULTS.maxRings, 'maxVips');
  if (maxVips * maglevSize > 0xffffffff) {
    throw new RangeError(`xdp.maxVips: ${maxVips} tables of ${maglevSize} entries exceed 2^32 positions`);
  }
  if (config.encapSource4 !== undefined && !isIPv4(config.encapSource4)) {
    throw new RangeError(`xdp.encapSource4: ${config.encapSource4} is not an IPv4 address`);
  }
  if (config.encapSource6 !== undefined && !isIPv6(config.encapSource6)) {
    throw new RangeError(`xdp.encapSource6: ${config.encapSource6} is not an IPv6 address`);
  }
  if (config.gatewayMac !== undefined) parseMac(config.gatewayMac);
  if (config.encapSource4 === undefined && config.encapSource6 === undefined) {
    throw new RangeError('xdp.encapSource4/encapSource6: at least one outer source address is needed');
  }
  return Object.freeze({
    hashSeed: config.hashSeed,
    maglevSize,
    maxVips,
    maxBackends: positiveInt(config.maxBackends ?? XDP_LB_DEFAULTS.maxBackends, 'maxBackends'),
    maxConns: positiveInt(config.maxConns ?? XDP_LB_DEFAULTS.maxConns, 'maxConns'),
    encapSource4: config.encapSource4,
    encapSource6: config.encapSource6,
    gatewayMac: config.gatewayMac,
  });
}

/** The loadObject options (globals and map sizes) for a configuration. */
export function xdpLoadOptions(config: ResolvedConfig, pinRoot?: string): OpenObjectOptions {
  return {
    pinRoot,
    globals: {
      hash_seed: u32Buffer(config.hashSeed),
      maglev_size: u32Buffer(config.maglevSize),
      conn_set_mask: u32Buffer(xdpConnSets(config.maxConns) - 1),
      encap_saddr4: config.encapSource4 ? ipv4ToBytes(config.encapSource4) : Buffer.alloc(4),
      encap_saddr6: config.encapSource6 ? ipToBytes16(config.encapSource6) : Buffer.alloc(16),
      gateway_mac: config.gatewayMac ? parseMac(config.gatewayMac) : Buffer.alloc(6),
    },
    mapMaxEntries: {
      [XdpMaps.vips]: config.maxVips,
      [XdpMaps.vipStats]: config.maxVips,
      [XdpMaps.vipKeys]: config.maxVips,
      [XdpMaps.maglev]: config.maxVips * config.maglevSize,
      [XdpMaps.backends]: config.maxBackends,
      [XdpMaps.backendStats]: config.maxBackends,
      [XdpMaps.conns]: xdpConnSets(config.maxConns),
    },
  };
}

/** A service's identity: `protocol:address:port` (the address canonical). */
export const xdpServiceKey = (address: string, port: number, protocol: XdpProtocol): string =>
  `${protocol}:${address}:${port}`;

interface VipState {
  readonly id: number;
  readonly address: string;
  readonly port: number;
  readonly protocol: XdpProtocol;
  backends: Set<string>;
}

export class XdpLoadBalancer {
  private readonly vips = new Map<string, VipState>();
  /** backend address → id and the services listing it */
  private readonly backendIds = new Map<string, { id: number; services: Set<string> }>();
  private readonly freeVipIds: number[] = [];
  private nextVipId = 0;
  /** Freed backend ids are reused oldest-first, so a recycled id is unlikely to meet old flows. */
  private readonly freeBackendIds: number[] = [];
  private nextBackendId = 1;
  private readonly tables: MaglevTableWriter;
  private readonly maps: {
    vips: BpfMap;
    backends: BpfMap;
    vipStats: BpfMap;
    backendStats: BpfMap;
    verdicts: BpfMap;
    vipKeys: BpfMap;
    vipFilter: BpfMap;
  };
  /** VIPs per filter slot (sluice_xdp_vip_filter_v1) */
  private readonly filterUsers = new Map<number, number>();

  private constructor(
    readonly object: BpfObject,
    readonly config: ResolvedConfig,
    private readonly logger: XdpLogger,
  ) {
    this.maps = {
      vips: object.map(XdpMaps.vips),
      backends: object.map(XdpMaps.backends),
      vipStats: object.map(XdpMaps.vipStats),
      backendStats: object.map(XdpMaps.backendStats),
      verdicts: object.map(XdpMaps.verdicts),
      vipKeys: object.map(XdpMaps.vipKeys),
      vipFilter: object.map(XdpMaps.vipFilter),
    };
    this.tables = new MaglevTableWriter(
      new BpfMaglevStore(object.map(XdpMaps.maglev)),
      config.maglevSize,
      config.maxVips,
    );
  }

  /** Loads the program with these settings (objectDir: where xdp_lb.bpf.o is, e.g. build/bpf). */
  static load(
    native: NativeBpf,
    objectDir: string,
    config: XdpLbConfig,
    options: { pinRoot?: string; logger?: XdpLogger } = {},
  ): XdpLoadBalancer {
    const resolved = resolveXdpConfig(config);
    const object = native.loadObject(
      join(objectDir, XDP_LB_OBJECT),
      xdpLoadOptions(resolved, options.pinRoot),
    );
    // Only the old program used a retired map: unpinning frees it once no attached program holds it.
    if (options.pinRoot) {
      for (const name of XDP_LB_RETIRED_MAPS) rmSync(join(options.pinRoot, name), { force: true });
    }
    const lb = new XdpLoadBalancer(object, resolved, options.logger ?? silentLogger);
    lb.restore();
    return lb;
  }

  /**
   * Adopts what pinned maps already hold (a restarted agent): VIP ids, backend ids and each VIP's
   * table, so the next setService changes only what differs and flows keep their backend ids.
   */
  private restore(): void {
    for (const key of this.maps.backends.keys()) {
      const id = key.readUInt32LE(0);
      const value = this.maps.backends.lookup(key);
      if (!value) continue;
      const backend = XdpBackendCodec.decode(value);
      if (!backend.family) continue;
      this.backendIds.set(bytes16ToIp(backend.addr), { id, services: new Set() });
      this.nextBackendId = Math.max(this.nextBackendId, id + 1);
    }
    const usedBackends = new Set([...this.backendIds.values()].map((b) => b.id));
    for (let id = 1; id < this.nextBackendId; id++) if (!usedBackends.has(id)) this.freeBackendIds.push(id);

    const maglev = this.object.map(XdpMaps.maglev);
    const size = this.config.maglevSize;
    for (const key of this.maps.vips.keys()) {
      const value = this.maps.vips.lookup(key);
      if (!value) continue;
      const vipKey = XdpVipKeyCodec.decode(key);
      const { vip_id: id } = XdpVipCodec.decode(value);
      const protocol: XdpProtocol = vipKey.proto === IPPROTO_TCP ? 'tcp' : 'udp';
      const address = bytes16ToIp(vipKey.addr);
      const serviceName = xdpServiceKey(address, vipKey.port, protocol);
      const table = new Uint32Array(size);
      for (let slot = 0; slot < size; slot++) {
        table[slot] = maglev.lookup(u32Buffer(id * size + slot))?.readUInt32LE(0) ?? 0;
      }
      this.tables.adopt(id, table);
      const listed = new Set<string>();
      for (const [address2, backend] of this.backendIds) {
        if (table.includes(backend.id)) {
          backend.services.add(serviceName);
          listed.add(address2);
        }
      }
      this.vips.set(serviceName, { id, address, port: vipKey.port, protocol, backends: listed });
      this.nextVipId = Math.max(this.nextVipId, id + 1);
    }
    const usedVips = new Set([...this.vips.values()].map((v) => v.id));
    for (let id = 0; id < this.nextVipId; id++) if (!usedVips.has(id)) this.freeVipIds.push(id);
    // The owner keys and the VIP filter follow the restored VIPs (pins of an older program, or a
    // crash between two writes, may have left them behind).
    for (const vip of this.vips.values()) this.publishVip(vip);
    const zeroKey = Buffer.alloc(XdpVipKeyCodec.size);
    for (let id = 0; id < this.config.maxVips; id++) {
      if (usedVips.has(id)) continue;
      const owner = this.maps.vipKeys.lookup(u32Buffer(id));
      if (owner && !owner.equals(zeroKey)) this.maps.vipKeys.update(u32Buffer(id), zeroKey);
    }
    if (this.vips.size > 0 || this.backendIds.size > 0) {
      this.logger.info(
        { vips: this.vips.size, backends: this.backendIds.size },
        'xdp state restored from pinned maps',
      );
    }
  }

  /**
   * Frees the slots of restored backends that no service lists (draining ones are not in any table, so
   * a restart cannot tell whose they were): call after the first full set of setService calls.
   */
  pruneBackends(): number {
    let pruned = 0;
    for (const [address, backend] of [...this.backendIds]) {
      if (backend.services.size > 0) continue;
      this.maps.backends.update(u32Buffer(backend.id), Buffer.alloc(XdpBackendCodec.size));
      this.backendIds.delete(address);
      this.freeBackendIds.push(backend.id);
      pruned++;
    }
    return pruned;
  }

  /** Attaches the balancer to an interface: native XDP when the driver has it, else generic. */
  attach(ifindex: number, options: { mode?: XdpMode | 'auto'; netns?: string } = {}): XdpLink {
    const link = this.object
      .program(XDP_LB_PROGRAM)
      .attachXdp(ifindex, options.mode ?? 'auto', options.netns ? { netns: options.netns } : undefined);
    this.logger.info(
      { ifindex, netns: options.netns, requested: options.mode ?? 'auto', mode: link.mode },
      `XDP load balancer attached in ${link.mode} mode`,
    );
    if (link.mode === 'generic' && (options.mode ?? 'auto') === 'auto') {
      this.logger.warn({ ifindex }, 'driver has no native XDP; using generic XDP (slower)');
    }
    return link;
  }

  /** Creates or updates a service: its backends, then its table, then (new VIPs) the VIP entry. */
  setService(spec: XdpServiceSpec): void {
    const { address, port, protocol } = validateService(spec);
    const key = xdpServiceKey(address, port, protocol);
    const backends = spec.backends.map((backend, i) => {
      if (!isIPv4(backend.address) && !isIPv6(backend.address)) {
        throw new RangeError(
          `xdp service ${key}: backends[${i}].address: ${backend.address} is not an IP address`,
        );
      }
      if (isIPv4(backend.address) && !this.config.encapSource4) {
        throw new RangeError(
          `xdp service ${key}: backends[${i}].address: IPv4 backend but no xdp.encapSource4`,
        );
      }
      if (isIPv6(backend.address) && !this.config.encapSource6) {
        throw new RangeError(
          `xdp service ${key}: backends[${i}].address: IPv6 backend but no xdp.encapSource6`,
        );
      }
      const weight = backend.weight ?? 1;
      if (!Number.isFinite(weight) || weight < 0) {
        throw new RangeError(`xdp service ${key}: backends[${i}].weight: ${weight} must be >= 0`);
      }
      const state = backend.state ?? 'active';
      if (state !== 'active' && state !== 'draining' && state !== 'unhealthy') {
        throw new RangeError(`xdp service ${key}: backends[${i}].state: ${String(state)} is not a state`);
      }
      return { address: canonicalIp(backend.address), weight, state, index: i };
    });
    const listed = new Set<string>();
    for (const backend of backends) {
      if (listed.has(backend.address)) {
        throw new RangeError(
          `xdp service ${key}: backends[${backend.index}].address: ${backend.address} is listed twice`,
        );
      }
      listed.add(backend.address);
    }
    let vip = this.vips.get(key);
    if (!vip) {
      const id = this.freeVipIds.shift() ?? this.nextVipId++;
      if (id >= this.config.maxVips) {
        this.nextVipId--;
        throw new RangeError(`xdp service ${key}: all ${this.config.maxVips} VIP slots are in use`);
      }
      vip = { id, address, port, protocol, backends: new Set() };
    }

    // Backend slots first, so the table never names an empty slot.
    for (const backend of backends) this.acquireBackend(backend.address, key);
    const table = buildMaglevTable(
      backends.map((backend) => ({
        key: backend.address,
        id: this.backendIds.get(backend.address)!.id,
        weight: backend.state === 'active' ? backend.weight : 0,
      })),
      { size: this.config.maglevSize, seed: this.config.hashSeed },
    );
    const written = this.tables.apply(vip.id, table);
    if (!this.vips.has(key)) {
      this.publishVip(vip);
      this.maps.vips.update(
        XdpVipKeyCodec.encode({ addr: ipToBytes16(address), port, proto: protoNumber(protocol) }),
        XdpVipCodec.encode({ vip_id: vip.id, ring_id: vip.id }),
      );
      this.vips.set(key, vip);
    }
    // Backends this service no longer lists lose their slot once no service lists them.
    for (const old of vip.backends) if (!listed.has(old)) this.releaseBackend(old, key);
    vip.backends = listed;
    this.logger.info(
      { service: key, vipId: vip.id, backends: listed.size, tableWrites: written.written },
      'xdp service set',
    );
  }

  /** Removes a service: the VIP entry first, then its table; unused backends lose their slots. */
  deleteService(vipAddress: string, port: number, protocol: XdpProtocol): boolean {
    const address = canonicalIp(vipAddress);
    const key = xdpServiceKey(address, port, protocol);
    const vip = this.vips.get(key);
    if (!vip) return false;
    this.maps.vips.delete(
      XdpVipKeyCodec.encode({ addr: ipToBytes16(address), port, proto: protoNumber(protocol) }),
    );
    this.unpublishVip(vip);
    this.tables.clear(vip.id);
    for (const backend of vip.backends) this.releaseBackend(backend, key);
    this.vips.delete(key);
    this.freeVipIds.push(vip.id);
    return true;
  }

  /** A VIP's owner entry (its id names its key) and its filter slot, before its VIP entry appears. */
  private publishVip(vip: VipState): void {
    const addr = ipToBytes16(vip.address);
    const proto = protoNumber(vip.protocol);
    this.maps.vipKeys.update(u32Buffer(vip.id), XdpVipKeyCodec.encode({ addr, port: vip.port, proto }));
    const slot = vipFilterSlot(addr, vip.port, proto);
    const users = (this.filterUsers.get(slot) ?? 0) + 1;
    this.filterUsers.set(slot, users);
    if (users === 1) this.maps.vipFilter.update(u32Buffer(slot), Buffer.from([1]));
  }

  /** After its VIP entry is gone: connection-table hits of the VIP's flows stop counting. */
  private unpublishVip(vip: VipState): void {
    this.maps.vipKeys.update(u32Buffer(vip.id), Buffer.alloc(XdpVipKeyCodec.size));
    const slot = vipFilterSlot(ipToBytes16(vip.address), vip.port, protoNumber(vip.protocol));
    const users = (this.filterUsers.get(slot) ?? 1) - 1;
    if (users > 0) {
      this.filterUsers.set(slot, users);
    } else {
      this.filterUsers.delete(slot);
      this.maps.vipFilter.update(u32Buffer(slot), Buffer.from([0]));
    }
  }

  /** The datapath id of a backend address (undefined when no service lists it). */
  backendId(address: string): number | undefined {
    return this.backendIds.get(canonicalIp(address))?.id;
  }

  /** The table the datapath holds for a service (slot → backend id). */
  table(address: string, port: number, protocol: XdpProtocol): Uint32Array | undefined {
    const vip = this.vips.get(xdpServiceKey(canonicalIp(address), port, protocol));
    return vip ? this.tables.current(vip.id) : undefined;
  }

  stats(): XdpLbStats {
    const sum = (map: BpfMap, index: number): Counter => {
      const values = map.lookupPerCpu(u32Buffer(index)) ?? [];
      let packets = 0n;
      let bytes = 0n;
      for (const value of values) {
        const counter = XdpCounterCodec.decode(value);
        packets += counter.packets;
        bytes += counter.bytes;
      }
      return { packets, bytes };
    };
    const verdicts = Object.fromEntries(
      XdpReasons.map((reason) => [reason.name, sum(this.maps.verdicts, reason.id)]),
    ) as Record<XdpReasonName, Counter>;
    return {
      vips: [...this.vips.values()].map((vip) => ({
        address: vip.address,
        port: vip.port,
        protocol: vip.protocol,
        ...sum(this.maps.vipStats, vip.id),
      })),
      backends: [...this.backendIds.entries()].map(([address, { id }]) => ({
        address,
        id,
        ...sum(this.maps.backendStats, id),
      })),
      verdicts,
    };
  }

  close(): void {
    this.object.close();
  }

  private acquireBackend(address: string, service: string): void {
    const known = this.backendIds.get(address);
    if (known) {
      known.services.add(service);
      return;
    }
    const id = this.freeBackendIds.shift() ?? this.nextBackendId++;
    if (id >= this.config.maxBackends) {
      this.nextBackendId--;
      throw new RangeError(
        `xdp backend ${address}: all ${this.config.maxBackends - 1} backend slots are in use`,
      );
    }
    this.maps.backends.update(
      u32Buffer(id),
      XdpBackendCodec.encode({
        addr: ipToBytes16(address),
        family: isIPv4(address) ? XDP_LB_AF_INET : XDP_LB_AF_INET6,
      }),
    );
    // Fresh counters for a fresh (or recycled) id.
    this.maps.backendStats.updatePerCpu(
      u32Buffer(id),
      Array.from({ length: this.maps.backendStats.lookupPerCpu(u32Buffer(id))?.length ?? 1 }, () =>
        Buffer.alloc(XdpCounterCodec.size),
      ),
    );
    this.backendIds.set(address, { id, services: new Set([service]) });
  }

  private releaseBackend(address: string, service: string): void {
    const known = this.backendIds.get(address);
    if (!known) return;
    known.services.delete(service);
    if (known.services.size > 0) return;
    this.maps.backends.update(u32Buffer(known.id), Buffer.alloc(XdpBackendCodec.size));
    this.backendIds.delete(address);
    this.freeBackendIds.push(known.id);
  }
}

/** One spelling per address (fd00:0:0::1 and fd00::1 are the same backend). */
function canonicalIp(address: string): string {
  return bytes16ToIp(ipToBytes16(address));
}

function protoNumber(protocol: XdpProtocol): number {
  return protocol === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
}

function validateService(spec: XdpServiceSpec): { address: string; port: number; protocol: XdpProtocol } {
  if (!isIPv4(spec.address) && !isIPv6(spec.address)) {
    throw new RangeError(`xdp service: address: ${spec.address} is not an IP address`);
  }
  if (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65_535) {
    throw new RangeError(`xdp service ${spec.address}: port: ${spec.port} must be in 1..65535`);
  }
  if (spec.protocol !== 'tcp' && spec.protocol !== 'udp') {
    throw new RangeError(
      `xdp service ${spec.address}:${spec.port}: protocol: ${String(spec.protocol)} must be tcp or udp`,
    );
  }
  return { address: canonicalIp(spec.address), port: spec.port, protocol: spec.protocol };
}
