import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { beforeAll, describe } from 'vitest';
import { cgroup2Mount } from './host';

export { cgroup2Mount };

/** The one explicit way to skip privileged tests; they never skip silently. */
export const SKIP_PRIVILEGED = process.env.SLUICE_SKIP_PRIVILEGED === '1';

const ADDON_PATH = resolve(__dirname, '../../native/build/Release/sluice_bpf.node');

function bpffsMounted(path = '/sys/fs/bpf'): boolean {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((line) => {
      const [, mountPoint, fsType] = line.split(' ');
      return mountPoint === path && fsType === 'bpf';
    });
}

/** Why privileged BPF tests cannot run here, or undefined when they can. */
export function privilegedUnavailableReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  if (!bpffsMounted()) return 'bpffs is not mounted at /sys/fs/bpf (make setup mounts it)';
  if (!cgroup2Mount()) return 'no cgroup v2 hierarchy is mounted';
  if (!existsSync(ADDON_PATH)) return `native addon not built at ${ADDON_PATH} (run make build)`;
  return undefined;
}

/**
 * A describe block for tests that need root, bpffs, cgroup v2 and the addon. When those are missing the
 * tests fail with the reason; they are skipped only when SLUICE_SKIP_PRIVILEGED=1 asks for it.
 */
export function describePrivileged(name: string, body: () => void): void {
  if (SKIP_PRIVILEGED) {
    describe.skip(name, body);
    return;
  }
  describe(name, () => {
    beforeAll(() => {
      const reason = privilegedUnavailableReason();
      if (reason) {
        throw new Error(
          `privileged test cannot run: ${reason}; set SLUICE_SKIP_PRIVILEGED=1 to skip explicitly`,
        );
      }
    });
    body();
  });
}
