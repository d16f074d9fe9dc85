/**
 * The BPF-backed datapath writer: the MapDatapathWriter over the pinned socket-LB maps, either from a
 * loaded object or opened from a pin directory. Its state is restored from the maps on construction,
 * so a restarted agent adopts what an earlier one programmed, ids and table halves included.
 */
import { join } from 'node:path';
import type { BpfMap, NativeBpf } from '../../native/types';
import { LbMaps } from '../abi/lb';
import type { LbMapSet } from './lb-maps';
import type { LbSettings } from './settings';
import { MapDatapathWriter } from './writer';

/** The socket-LB maps of a loaded object (any of sock_lb, sockops, sock_reaper: they share pins). */
export function lbMapSetFromObject(object: { map(name: string): BpfMap }, cpus: number): LbMapSet {
  return {
    services: object.map(LbMaps.services),
    backends: object.map(LbMaps.backends),
    slots: object.map(LbMaps.slots),
    backendState: object.map(LbMaps.backendState),
    backendStats: object.map(LbMaps.backendStats),
    serviceStats: object.map(LbMaps.serviceStats),
    cpus,
  };
}

/** The socket-LB maps pinned by name under `pinDir`. */
export function lbMapSetFromPins(bpf: NativeBpf, pinDir: string): LbMapSet {
  const open = (name: string): BpfMap => bpf.openPinnedMap(join(pinDir, name));
  return {
    services: open(LbMaps.services),
    backends: open(LbMaps.backends),
    slots: open(LbMaps.slots),
    backendState: open(LbMaps.backendState),
    backendStats: open(LbMaps.backendStats),
    serviceStats: open(LbMaps.serviceStats),
    cpus: bpf.possibleCpus(),
  };
}

export function createBpfDatapathWriter(maps: LbMapSet, settings: LbSettings): MapDatapathWriter {
  return new MapDatapathWriter(maps, { reclaimGraceMs: settings.reclaimGraceMs });
}
