import { describe, expect, it } from 'vitest';
import {
  AGENT_DEFAULTS,
  type ConfigEnvironment,
  ConfigError,
  cgroup2MountFrom,
  loadAgentConfig,
  parseHostPort,
} from '../../agent/config';

const HYBRID_MOUNTS = [
  'sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0',
  'tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0',
  'cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0',
  'cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0',
  'bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0',
].join('\n');

const env: ConfigEnvironment = { readMounts: () => HYBRID_MOUNTS, hostname: () => 'Host-1' };

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('cgroup2MountFrom', () => {
  it('finds the cgroup2 mount on a hybrid host and on a pure v2 host', () => {
    expect(cgroup2MountFrom(HYBRID_MOUNTS)).toBe('/sys/fs/cgroup/unified');
    expect(cgroup2MountFrom('cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n')).toBe('/sys/fs/cgroup');
  });
  it('decodes octal escapes and reports absence', () => {
    expect(cgroup2MountFrom('none /mnt/my\\040cg cgroup2 rw 0 0')).toBe('/mnt/my cg');
    expect(cgroup2MountFrom('cgroup /sys/fs/cgroup/cpu cgroup rw 0 0')).toBeUndefined();
  });
});

describe('parseHostPort', () => {
  it('parses IPv4, names and bracketed IPv6', () => {
    expect(parseHostPort('127.0.0.1:7700')).toEqual({ host: '127.0.0.1', port: 7700 });
    expect(parseHostPort('controller.local:0')).toEqual({ host: 'controller.local', port: 0 });
    expect(parseHostPort('[::1]:5353')).toEqual({ host: '::1', port: 5353 });
  });
  it('rejects malformed input with the reason', () => {
    expect(() => parseHostPort('127.0.0.1')).toThrow(/must be HOST:PORT/);
    expect(() => parseHostPort('::1:53')).toThrow(/must be HOST:PORT/);
    expect(() => parseHostPort('a:70000')).toThrow(/port must be an integer from 0 to 65535/);
    expect(() => parseHostPort('[nothost]:53')).toThrow(/not an IPv6 address/);
  });
});

describe('loadAgentConfig', () => {
  it('applies the defaults in controller mode and freezes the result', () => {
    const config = loadAgentConfig(['--controller', '127.0.0.1:7700'], env);
    expect(config).toEqual({
      command: 'run',
      mode: 'controller',
      controller: { host: '127.0.0.1', port: 7700 },
      configFile: undefined,
      node: 'host-1',
      zone: undefined,
      cgroup: '/sys/fs/cgroup/unified',
      bpffs: AGENT_DEFAULTS.bpffs,
      metrics: { host: '127.0.0.1', port: 9464 },
      dns: { host: '127.0.0.1', port: 5353 },
      logLevel: 'info',
      tls: undefined,
      insecure: false,
      stateDir: '/var/lib/sluice',
      fastpath: 'off',
      xdp: undefined,
    });
    expect(Object.isFrozen(config)).toBe(true);
    if (config.command === 'run') expect(Object.isFrozen(config.metrics)).toBe(true);
  });

  it('takes every flag, standalone mode and off switches', () => {
    const config = loadAgentConfig(
      [
        '--config',
        'services.yaml',
        '--node',
        'node-a',
        '--zone',
        'zone-1',
        '--cgroup',
        '/sys/fs/cgroup/sluice',
        '--bpffs',
        '/sys/fs/bpf/x',
        '--metrics',
        'off',
        '--dns',
        '[::1]:53',
        '--log-level',
        'debug',
        '--fastpath',
        'mesh',
      ],
      env,
    );
    expect(config).toMatchObject({
      command: 'run',
      mode: 'standalone',
      controller: undefined,
      configFile: 'services.yaml',
      node: 'node-a',
      zone: 'zone-1',
      cgroup: '/sys/fs/cgroup/sluice',
      bpffs: '/sys/fs/bpf/x',
      metrics: undefined,
      dns: { host: '::1', port: 53 },
      logLevel: 'debug',
      fastpath: 'mesh',
    });
    expect(loadAgentConfig(['--controller', '127.0.0.1:7700', '--fastpath', 'all'], env)).toMatchObject({
      fastpath: 'all',
    });
  });

  it('takes the XDP load balancer flags', () => {
    expect(
      loadAgentConfig(
        [
          '--config',
          'f.yaml',
          '--xdp-interface',
          'eth0',
          '--xdp-mode',
          'generic',
          '--xdp-source',
          '192.0.2.1',
          '--xdp-source',
          '2001:db8::1',
          '--xdp-hash-seed',
          '7',
          '--xdp-table-size',
          '1021',
        ],
        env,
      ),
    ).toMatchObject({
      xdp: {
        interface: 'eth0',
        mode: 'generic',
        encapSource4: '192.0.2.1',
        encapSource6: '2001:db8::1',
        hashSeed: 7,
        tableSize: 1021,
      },
    });
    expect(loadAgentConfig(['--config', 'f.yaml', '--xdp-interface', 'eth0'], env)).toMatchObject({
      xdp: {
        interface: 'eth0',
        mode: 'auto',
        encapSource4: undefined,
        encapSource6: undefined,
        hashSeed: AGENT_DEFAULTS.xdpHashSeed,
        tableSize: undefined,
      },
    });
  });

  it('parses the uninstall subcommand', () => {
    expect(loadAgentConfig(['uninstall', '--bpffs', '/sys/fs/bpf/t'], env)).toEqual({
      command: 'uninstall',
      cgroup: '/sys/fs/cgroup/unified',
      bpffs: '/sys/fs/bpf/t',
      logLevel: 'info',
    });
    const err = errorOf(() => loadAgentConfig(['uninstall', '--node', 'x'], env));
    expect(err.flag).toBe('--node');
  });

  it.each([
    [['--controller', 'nope'], '--controller', /must be HOST:PORT/],
    [['--controller', 'a:1', '--metrics', 'a:99999'], '--metrics', /port must be an integer/],
    [['--controller', 'a:1', '--dns', 'x'], '--dns', /must be HOST:PORT/],
    [['--controller', 'a:1', '--bpffs', 'rel/dir'], '--bpffs', /must be an absolute path/],
    [['--controller', 'a:1', '--cgroup', 'cg'], '--cgroup', /must be an absolute path/],
    [['--controller', 'a:1', '--node', 'bad name'], '--node', /must be a node name: lowercase DNS labels/],
    [['--controller', 'a:1', '--node', 'Node-A'], '--node', /must be a node name/],
    [['--controller', 'a:1', '--zone', ''], '--zone', /must be a zone name/],
    [['--controller', 'a:1', '--zone', 'z'.repeat(64)], '--zone', /at most 63 characters/],
    [['--controller', 'a:1', '--log-level', 'loud'], '--log-level', /must be one of fatal, error/],
    [['--controller', 'a:1', '--fastpath', 'on'], '--fastpath', /must be one of off, mesh, all/],
    [['--controller', 'a:1', '--config', 'f.yaml'], '--config', /cannot be combined with --controller/],
    [['--node', 'n'], '--controller', /required \(or --config FILE/],
    [['--controller', 'a:1', '--bogus', 'x'], '--bogus', /Unknown option/],
    [['--controller'], '--controller', /argument missing/],
    [['start'], 'argv', /unknown command "start"/],
    [
      ['--controller', '10.0.0.1:7700'],
      '--controller',
      /refusing plaintext gRPC to non-loopback controller 10\.0\.0\.1:7700: give --tls-cert, --tls-key and --tls-ca, or --insecure$/,
    ],
    [['--controller', 'ctl.svc:7700'], '--controller', /refusing plaintext gRPC to non-loopback/],
    [['--controller', '[fd00::1]:7700'], '--controller', /refusing plaintext gRPC to non-loopback/],
    [
      ['--controller', '127.0.0.1:1', '--tls-cert', 'c.pem'],
      '--tls-key',
      /^--tls-key: required with --tls-cert \(--tls-cert, --tls-key and --tls-ca go together\)$/,
    ],
    [
      ['--controller', '127.0.0.1:1', '--tls-cert', 'c.pem', '--tls-key', 'k.pem'],
      '--tls-ca',
      /required with --tls-cert and --tls-key/,
    ],
    [['--controller', '127.0.0.1:1', '--tls-ca', 'ca.pem'], '--tls-cert', /required with --tls-ca/],
    [['--controller', '127.0.0.1:1', '--tls-cert', ''], '--tls-cert', /must not be empty/],
    [
      ['--controller', 'a:1', '--tls-cert', 'c', '--tls-key', 'k', '--tls-ca', 'ca', '--insecure'],
      '--insecure',
      /cannot be combined with --tls-cert/,
    ],
    [
      ['--config', 'f.yaml', '--tls-cert', 'c', '--tls-key', 'k', '--tls-ca', 'ca'],
      '--tls-cert',
      /only applies with --controller/,
    ],
    [['--config', 'f.yaml', '--insecure'], '--insecure', /only applies with --controller/],
    [['--controller', '127.0.0.1:1', '--state-dir', 'var/lib'], '--state-dir', /must be an absolute path/],
    [['--controller', '127.0.0.1:1', '--insecure=yes'], '--insecure', /does not take an argument/],
    [['--config', 'f.yaml', '--xdp-mode', 'native'], '--xdp-mode', /only applies with --xdp-interface/],
    [
      ['--config', 'f.yaml', '--xdp-interface', 'eth0', '--xdp-mode', 'fast'],
      '--xdp-mode',
      /must be one of auto, native, generic/,
    ],
    [['--config', 'f.yaml', '--xdp-interface', 'eth0/1'], '--xdp-interface', /must be an interface name/],
    [
      ['--config', 'f.yaml', '--xdp-interface', 'eth0', '--xdp-source', 'node-a'],
      '--xdp-source',
      /must be an IPv4 or IPv6 address/,
    ],
    [
      [
        '--config',
        'f.yaml',
        '--xdp-interface',
        'eth0',
        '--xdp-source',
        '192.0.2.1',
        '--xdp-source',
        '192.0.2.2',
      ],
      '--xdp-source',
      /at most one IPv4 and one IPv6 address/,
    ],
    [
      ['--config', 'f.yaml', '--xdp-interface', 'eth0', '--xdp-hash-seed', '4294967296'],
      '--xdp-hash-seed',
      /from 0 to 4294967295/,
    ],
    [
      ['--config', 'f.yaml', '--xdp-interface', 'eth0', '--xdp-table-size', '65536'],
      '--xdp-table-size',
      /must be a prime/,
    ],
  ])('rejects %j naming %s', (argv, flag, reason) => {
    const err = errorOf(() => loadAgentConfig(argv, env));
    expect(err.flag).toBe(flag);
    expect(err.message).toMatch(reason);
    expect(err.message.startsWith(`${flag}: `)).toBe(true);
    expect(err.code).toBe('SLUICE_ERR_CONFIG');
  });

  it('takes mTLS files, --insecure for a remote plaintext controller, and --state-dir', () => {
    expect(
      loadAgentConfig(
        [
          '--controller',
          'ctl.sluice-system.svc:7700',
          '--tls-cert',
          '/t/a.crt',
          '--tls-key',
          '/t/a.key',
          '--tls-ca',
          '/t/ca.crt',
          '--state-dir',
          '/tmp/st',
        ],
        env,
      ),
    ).toMatchObject({
      controller: { host: 'ctl.sluice-system.svc', port: 7700 },
      tls: { cert: '/t/a.crt', key: '/t/a.key', ca: '/t/ca.crt' },
      insecure: false,
      stateDir: '/tmp/st',
    });
    expect(loadAgentConfig(['--controller', '10.0.0.1:7700', '--insecure'], env)).toMatchObject({
      tls: undefined,
      insecure: true,
    });
    // Loopback needs neither, like the controller's listen rule.
    for (const host of ['127.0.0.1', '127.5.0.1', 'localhost', '[::1]']) {
      expect(loadAgentConfig(['--controller', `${host}:7700`], env)).toMatchObject({ tls: undefined });
    }
  });

  it('names --cgroup when no cgroup v2 mount exists and no flag is given', () => {
    const bare: ConfigEnvironment = { readMounts: () => 'proc /proc proc rw 0 0', hostname: () => 'h' };
    const err = errorOf(() => loadAgentConfig(['--controller', 'a:1'], bare));
    expect(err.flag).toBe('--cgroup');
    expect(loadAgentConfig(['--controller', '127.0.0.1:1', '--cgroup', '/cg'], bare)).toMatchObject({
      cgroup: '/cg',
    });
  });

  it('reads the real /proc/self/mounts by default', () => {
    const config = loadAgentConfig(['--controller', '127.0.0.1:7700']);
    expect(config.cgroup).toMatch(/^\/sys\/fs\/cgroup/);
  });
});
