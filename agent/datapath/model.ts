/**
 * The plain service/backend data the datapath is computed from, and its validation. Bad input is an
 * LbModelError naming the field (`services[2].backends[0].port`) and the reason.
 */
import { isIP } from 'node:net';
import { bytes16ToIp, ipToBytes16 } from '../abi/ip';
import { LbAlgorithm, type LbAlgorithmName } from '../abi/lb';

export type LbProtocol = 'tcp' | 'udp';

export interface BackendSpec {
  address: string;
  port: number;
  /** relative weight, 1..65535 (default 1). */
  weight?: number;
  /** 'draining': existing sockets keep it, new connects never pick it (default 'active'). */
  state?: 'active' | 'draining';
  nodeLocal?: boolean;
}

export interface EjectionSpec {
  /** consecutive failed connects that eject a backend (default 3; 0 turns ejection off). */
  threshold?: number;
  /** base ejection time; the n-th ejection in a row lasts n × base (default 30 000 ms). */
  baseMs?: number;
  /** cap of the ejection time (default 300 000 ms). */
  maxMs?: number;
  /** at most this % of the members ejected at once; one may always be (default 50). */
  maxEjectionPercent?: number;
}

export interface ServiceSpec {
  /** for messages only. */
  name?: string;
  vip: string;
  port: number;
  protocol?: LbProtocol;
  algorithm?: LbAlgorithmName;
  /** client (network namespace) affinity, kept while the client reconnects within the timeout. */
  affinity?: { timeoutSeconds: number };
  ejection?: EjectionSpec;
  backends: BackendSpec[];
}

export class LbModelError extends Error {
  readonly code = 'ERR_LB_MODEL';
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = 'LbModelError';
  }
}

export function checkInteger(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new LbModelError(field, `must be an integer, got ${JSON.stringify(value)}`);
  }
  if (value < min || value > max) throw new LbModelError(field, `must be in [${min}, ${max}], got ${value}`);
  return value;
}

/** The address in canonical text (IPv4 dotted, IPv6 compressed) and its 16-byte form. */
export interface CheckedAddress {
  readonly text: string;
  readonly bytes: Buffer;
  readonly v4: boolean;
}

// Parsed addresses, reused across syncs (backends repeat, and a full sync re-reads every VIP).
const addressCache = new Map<string, CheckedAddress>();
const ADDRESS_CACHE_MAX = 262_144;

/** Dotted-quad IPv4 in canonical form (no leading zeros, each part ≤ 255) → its 32-bit value, else -1. */
function parseCanonicalIpv4(text: string): number {
  const n = text.length;
  if (n < 7 || n > 15) return -1;
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return -1;
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1; // leading zero
      part = part * 10 + (c - 48);
      if (part > 255) return -1;
      digits++;
    } else {
      return -1;
    }
  }
  if (digits === 0 || dots !== 3) return -1;
  return value * 256 + part;
}

// 16-byte address fields carved from shared slabs rather than one allocation each.
let slab = Buffer.alloc(0);
let slabAt = 0;
function addressBytes(): Buffer {
  if (slabAt + 16 > slab.length) {
    slab = Buffer.alloc(16 * 1024);
    slabAt = 0;
  }
  const out = slab.subarray(slabAt, slabAt + 16);
  slabAt += 16;
  return out;
}

export function checkAddress(value: unknown, field: string): CheckedAddress {
  if (typeof value === 'string') {
    const cached = addressCache.get(value);
    if (cached) return cached;
  }
  if (typeof value !== 'string') {
    throw new LbModelError(field, `must be an IPv4 or IPv6 address, got ${JSON.stringify(value)}`);
  }
  let checked: CheckedAddress;
  const v4 = parseCanonicalIpv4(value);
  if (v4 >= 0) {
    // The common case, without the generic parse and print: canonical IPv4 text is its own canonical form.
    const bytes = addressBytes();
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    bytes.writeUInt32BE(v4, 12);
    checked = Object.freeze({ text: value, bytes, v4: true });
  } else {
    if (isIP(value) === 0) {
      throw new LbModelError(field, `must be an IPv4 or IPv6 address, got ${JSON.stringify(value)}`);
    }
    const bytes = ipToBytes16(value);
    const text = bytes16ToIp(bytes);
    checked = Object.freeze({ text, bytes, v4: isIP(text) === 4 });
  }
  if (addressCache.size >= ADDRESS_CACHE_MAX) addressCache.clear();
  addressCache.set(value, checked);
  return checked;
}

export function checkAlgorithm(value: unknown, field: string): LbAlgorithmName {
  if (typeof value !== 'string' || !Object.hasOwn(LbAlgorithm, value)) {
    throw new LbModelError(
      field,
      `must be one of ${Object.keys(LbAlgorithm).join(', ')}, got ${JSON.stringify(value)}`,
    );
  }
  return value as LbAlgorithmName;
}
