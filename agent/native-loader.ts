/**
 * Loads the native addon on first use, so commands that never touch BPF (--help, config errors) start
 * without it and a missing build is reported as one clear error.
 */
import type { NativeBpf } from '../native/types';

let loaded: NativeBpf | undefined;

export function loadNative(): NativeBpf {
  if (!loaded) {
    loaded = (require('../native') as { bpf: NativeBpf }).bpf;
  }
  return loaded;
}
