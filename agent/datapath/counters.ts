/**
 * Reads the per-CPU socket-LB counters (summed over CPUs) and the live backend state, per service and
 * per backend, for metrics and sluicectl.
 */
import { u32Key } from '../abi/codec';
import { BackendStateCodec, BackendStatsCodec, ServiceStatsCodec } from '../abi/lb';
import type { LbMapSet } from './lb-maps';
import type { DatapathState } from './state';

export interface BackendCounters {
  readonly connects: bigint;
  readonly connectFailures: bigint;
  readonly ejections: bigint;
  readonly closed: bigint;
  /** established TCP connections open now. */
  readonly active: bigint;
  readonly consecutiveFailures: number;
  /** bpf_ktime_get_ns() (CLOCK_MONOTONIC) until which it is ejected; 0n when it never was. */
  readonly ejectedUntilNs: bigint;
}

export interface ServiceCounters {
  readonly connects: bigint;
  readonly connectFailures: bigint;
  readonly noBackend: bigint;
  readonly ejections: bigint;
}

export interface ServiceCounterReport {
  readonly service: string;
  readonly id: number;
  readonly counters: ServiceCounters;
  readonly backends: readonly {
    readonly address: string;
    readonly port: number;
    readonly id: number;
    readonly counters: BackendCounters;
  }[];
}

export function readBackendCounters(maps: LbMapSet, id: number): BackendCounters {
  const perCpu = (maps.backendStats.lookupPerCpu(u32Key(id)) ?? []).map((b) => BackendStatsCodec.decode(b));
  const sum = (field: 'connect_failures' | 'ejections'): bigint =>
    perCpu.reduce((acc, v) => acc + v[field], 0n);
  const rawState = maps.backendState.lookup(u32Key(id));
  const state = rawState ? BackendStateCodec.decode(rawState) : undefined;
  return {
    connects: state?.connects ?? 0n,
    connectFailures: sum('connect_failures'),
    ejections: sum('ejections'),
    closed: state?.closed ?? 0n,
    active: state?.active ?? 0n,
    consecutiveFailures: state?.consecutive_fails ?? 0,
    ejectedUntilNs: state?.ejected_until_ns ?? 0n,
  };
}

/**
 * A service's counters. Its connects are the sum of its backends' (the kernel counts them once, per
 * backend): pass the ids of its members; a removed member's connects leave the sum with it.
 */
export function readServiceCounters(
  maps: LbMapSet,
  id: number,
  memberIds: readonly number[],
): ServiceCounters {
  const perCpu = (maps.serviceStats.lookupPerCpu(u32Key(id)) ?? []).map((b) => ServiceStatsCodec.decode(b));
  const sum = (field: 'connect_failures' | 'no_backend' | 'ejections'): bigint =>
    perCpu.reduce((acc, v) => acc + v[field], 0n);
  let connects = 0n;
  for (const memberId of memberIds) {
    const raw = maps.backendState.lookup(u32Key(memberId));
    if (raw) connects += BackendStateCodec.decode(raw).connects;
  }
  return {
    connects,
    connectFailures: sum('connect_failures'),
    noBackend: sum('no_backend'),
    ejections: sum('ejections'),
  };
}

/** Counters of every service the state holds, with its backends. */
export function readCounters(maps: LbMapSet, state: DatapathState): ServiceCounterReport[] {
  return [...state.services.values()].map((service) => ({
    service: service.keyString,
    id: service.id,
    counters: readServiceCounters(
      maps,
      service.id,
      [...service.members.values()].map((m) => m.id),
    ),
    backends: [...service.members.values()].map((m) => ({
      address: m.address,
      port: m.port,
      id: m.id,
      counters: readBackendCounters(maps, m.id),
    })),
  }));
}
