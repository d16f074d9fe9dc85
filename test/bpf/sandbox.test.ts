import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { expect, it } from 'vitest';
import { describePrivileged } from '../support/privileged';
import { createSandbox } from '../support/sandbox';

describePrivileged('test sandbox', () => {
  it('makes a netns with no route out and removes everything it made', async () => {
    const sandbox = createSandbox('sandbox-selftest');
    let nsName = '';
    try {
      const ns = sandbox.netns();
      nsName = ns.name;
      // The VIP safety rule rests on this: a packet that escapes translation has nowhere to go.
      expect(() => ns.exec(['ip', 'route', 'get', '10.96.0.10'])).toThrow(/unreachable/);
      expect(ns.exec(['ip', '-o', 'link', 'show']).trim().split('\n')).toHaveLength(1);
      const other = sandbox.netns();
      const pair = sandbox.veth(ns, other, '192.168.77.1/30', '192.168.77.2/30');
      expect(ns.ifindex(pair.a)).toBeGreaterThan(1);
      expect(existsSync(sandbox.cgroupPath)).toBe(true);
      const child = sandbox.spawn(['sleep', '30'], { netns: ns, inCgroup: true });
      await new Promise((r) => setTimeout(r, 200));
      expect(child.exitCode).toBeNull();
    } finally {
      await sandbox.cleanup();
    }
    expect(existsSync(sandbox.cgroupPath)).toBe(false);
    expect(existsSync(sandbox.bpffsDir)).toBe(false);
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(nsName);
  });
});
