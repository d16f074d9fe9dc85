/** Facts about the host that tests, benchmarks and the sweep all need; no vitest here. */
import { readFileSync } from 'node:fs';

/** Where cgroup v2 is mounted: /sys/fs/cgroup on pure v2, /sys/fs/cgroup/unified on hybrid hosts. */
export function cgroup2Mount(): string | undefined {
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n');
  for (const line of mounts) {
    const [, mountPoint, fsType] = line.split(' ');
    if (fsType === 'cgroup2' && mountPoint) return mountPoint;
  }
  return undefined;
}
