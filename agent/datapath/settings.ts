/**
 * Socket-LB capacities and defaults: one schema, validated once, frozen. Capacities become map
 * max_entries before load (lbMapMaxEntries); hitting one at run time is an LbCapacityError naming the
 * setting, raised before anything is written, so a service is never programmed halfway.
 */
import { LbMaps } from '../abi/lb';

export interface LbSettings {
  /** services (VIP, port, protocol) the maps hold: sluice_lb_services_v2 max_entries. */
  readonly maxServices: number;
  /** backends summed over all services: sluice_lb_backends_v1 max_entries. */
  readonly maxBackends: number;
  /** selection-table entries over all services, both halves: sluice_lb_slots_v1 max_entries. */
  readonly maxSlots: number;
  /** slots of one service's selection table (resolution of weights; at most 65 535). */
  readonly tableSize: number;
  /** clients remembered for session affinity: sluice_lb_affinity_v1 max_entries. */
  readonly maxAffinity: number;
  /** unconnected-UDP reverse translations remembered: sluice_lb_udp_revnat_v1 max_entries. */
  readonly maxUdpRevnat: number;
  /** how long removed backends and table entries stay in the maps after a change (in-flight readers). */
  readonly reclaimGraceMs: number;
}

export const DEFAULT_LB_SETTINGS: LbSettings = Object.freeze({
  maxServices: 65_536,
  maxBackends: 65_536,
  maxSlots: 1_048_576,
  tableSize: 1024,
  maxAffinity: 65_536,
  maxUdpRevnat: 65_536,
  reclaimGraceMs: 20,
});

/** Service defaults for fields a service leaves out. */
export const SERVICE_DEFAULTS = Object.freeze({
  protocol: 'tcp' as const,
  algorithm: 'random' as const,
  weight: 1,
  ejectionThreshold: 3,
  ejectionBaseMs: 30_000,
  ejectionMaxMs: 300_000,
  maxEjectionPercent: 50,
  affinityTimeoutSeconds: 10_800,
});

export class LbSettingsError extends Error {
  readonly code = 'ERR_LB_SETTINGS';
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`lb.${field}: ${reason}`);
    this.name = 'LbSettingsError';
  }
}

/** Raised when a change would exceed a capacity; nothing of the change has been written. */
export class LbCapacityError extends Error {
  readonly code = 'ERR_LB_CAPACITY';
  constructor(
    readonly setting: keyof LbSettings,
    readonly limit: number,
    readonly needed: number,
    detail = '',
  ) {
    super(
      `socket-LB capacity lb.${setting} (${limit}) exceeded: the change needs ${needed}${detail ? ` (${detail})` : ''}; raise lb.${setting}`,
    );
    this.name = 'LbCapacityError';
  }
}

const LIMITS: Record<keyof LbSettings, [number, number]> = {
  maxServices: [1, 16_777_216],
  maxBackends: [1, 16_777_216],
  maxSlots: [2, 1 << 30],
  tableSize: [1, 65_535],
  maxAffinity: [1, 16_777_216],
  maxUdpRevnat: [1, 16_777_216],
  reclaimGraceMs: [0, 60_000],
};

export function resolveLbSettings(input: Partial<LbSettings> = {}): LbSettings {
  const merged: Record<string, unknown> = { ...DEFAULT_LB_SETTINGS, ...input };
  for (const [field, [min, max]] of Object.entries(LIMITS)) {
    const value = merged[field];
    if (typeof value !== 'number' || !Number.isInteger(value)) {
      throw new LbSettingsError(field, `must be an integer, got ${String(value)}`);
    }
    if (value < min || value > max)
      throw new LbSettingsError(field, `must be in [${min}, ${max}], got ${value}`);
  }
  return Object.freeze(merged as unknown as LbSettings);
}

/** max_entries for loadObject's mapMaxEntries. Per-id arrays hold ids 1..max, so they are one larger. */
export function lbMapMaxEntries(settings: LbSettings): Record<string, number> {
  return {
    [LbMaps.services]: settings.maxServices,
    [LbMaps.backends]: settings.maxBackends,
    [LbMaps.slots]: settings.maxSlots,
    [LbMaps.backendState]: settings.maxBackends + 1,
    [LbMaps.backendStats]: settings.maxBackends + 1,
    [LbMaps.serviceStats]: settings.maxServices + 1,
    [LbMaps.affinity]: settings.maxAffinity,
    [LbMaps.udpRevnat]: settings.maxUdpRevnat,
  };
}
