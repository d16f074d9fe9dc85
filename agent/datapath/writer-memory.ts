/**
 * The in-memory datapath writer for unit tests of everything above the maps: the same writer code as
 * the BPF one, over in-memory maps that record every operation (so a test can check each intermediate
 * state the kernel would expose to connect()).
 */
import { type MemoryLbMapSet, type MemoryMapOp, memoryLbMapSet } from './lb-maps';
import { DEFAULT_LB_SETTINGS, type LbSettings } from './settings';
import { MapDatapathWriter } from './writer';

export interface MemoryDatapathWriter extends MapDatapathWriter {
  readonly maps: MemoryLbMapSet;
}

export function createMemoryDatapathWriter(
  options: {
    settings?: LbSettings;
    maps?: MemoryLbMapSet;
    cpus?: number;
    onOp?: (op: MemoryMapOp) => void;
  } = {},
): MemoryDatapathWriter {
  const settings = options.settings ?? DEFAULT_LB_SETTINGS;
  const maps =
    options.maps ??
    memoryLbMapSet(
      { services: settings.maxServices, backends: settings.maxBackends, slots: settings.maxSlots },
      { cpus: options.cpus, onOp: options.onOp },
    );
  return new MapDatapathWriter(maps, { reclaimGraceMs: 0 }) as MemoryDatapathWriter;
}
