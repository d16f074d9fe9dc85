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

export function checkAddress(value: unknown, field: string): CheckedAddress {
  if (typeof value === 'string') {
    const cached = addressCache.get(value);
    if (cached) return cached;
  }
  if (typeof value !== 'string' || isIP(value) === 0) {
    throw new LbModelError(field, `must be an IPv4 or IPv6 address, got ${JSON.stringify(value)}`);
  }
  const bytes = ipToBytes16(value);
  const text = bytes16ToIp(bytes);
  const checked = Object.freeze({ text, bytes, v4: isIP(text) === 4 });
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
