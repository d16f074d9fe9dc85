import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, test } from 'vitest';
import { parseControllerArgs, validate } from '../../controller/main';
import { isLoopbackListen, splitHostPort } from '../../controller/server';
import { tempDir } from './helpers';

const dirs: (() => void)[] = [];
afterEach(() => {
  while (dirs.length > 0) dirs.pop()?.();
});

function run(text: string, name = 'services.yaml') {
  const t = tempDir();
  dirs.push(t.cleanup);
  const path = join(t.dir, name);
  writeFileSync(path, text);
  const out = new PassThrough();
  const err = new PassThrough();
  const code = validate(path, out, err);
  return { code, path, out: String(out.read() ?? ''), err: String(err.read() ?? '') };
}

describe('sluice-controller validate', () => {
  test('a valid file: exit 0 with a summary', () => {
    const r = run(readFileSync(join(__dirname, 'fixtures/issue-example.yaml'), 'utf8'));
    expect(r.code).toBe(0);
    expect(r.out).toBe(`${r.path}: ok (1 services, 3 backends)\n`);
    expect(r.err).toBe('');
  });

  test('an invalid file: exit 1 listing every error', () => {
    const r = run(
      [
        'services:',
        '  - { name: web, vip: 10.96.0.10, ports: [{ port: 80 }], backends: [{ address: 10.0.0.1, weight: 70000 }] }',
        '  - { name: web, vip: 10.96.0.11, ports: [{ port: 80 }], healthCheck: { protocol: tcp, interval: 1x } }',
        '  - { name: api, vip: 10.96.0.10, ports: [{ port: 80 }] }',
      ].join('\n'),
    );
    expect(r.code).toBe(1);
    expect(r.err.split('\n')).toEqual([
      `${r.path}: services[0].backends[0].weight: must be an integer from 0 to 65535`,
      `${r.path}: services[1].healthCheck.interval: must be a duration such as 500ms, 1s, 5m or 3h`,
      `${r.path}: services[1].name: service default/web is already defined at services[0]`,
      `${r.path}: services[2].ports[0]: 10.96.0.10:80/TCP is already used by services[0]`,
      `${r.path}: 4 errors`,
      '',
    ]);
  });

  test('a JSON file is accepted', () => {
    const r = run(
      JSON.stringify({ services: [{ name: 'a', vip: 'fd00::1', ports: [{ port: 53, protocol: 'UDP' }] }] }),
      'c.json',
    );
    expect(r.code).toBe(0);
  });

  test('a missing file', () => {
    const out = new PassThrough();
    const err = new PassThrough();
    expect(validate('/nonexistent/services.yaml', out, err)).toBe(1);
    expect(String(err.read())).toMatch(/^\/nonexistent\/services.yaml: cannot read: ENOENT/);
  });
});

describe('command line', () => {
  test('full set of flags', () => {
    expect(
      parseControllerArgs([
        '--config',
        'services.yaml',
        '--listen',
        '[::1]:7700',
        '--metrics',
        '127.0.0.1:9465',
        '--tls-cert',
        'c.pem',
        '--tls-key',
        'k.pem',
        '--tls-ca',
        'ca.pem',
        '--health-grace',
        '1m',
      ]),
    ).toEqual({
      config: 'services.yaml',
      listen: '[::1]:7700',
      metrics: '127.0.0.1:9465',
      tls: { cert: 'c.pem', key: 'k.pem', ca: 'ca.pem' },
      insecure: false,
      healthGraceMs: 60_000,
      logLevel: 'info',
    });
  });

  test.each([
    [['--listen', '127.0.0.1:7700'], '--config is required'],
    [['--config', 'x'], '--listen is required'],
    [
      ['--config', 'x', '--listen', '7700'],
      "--listen: listen address '7700' must be host:port or [ipv6]:port",
    ],
    [
      ['--config', 'x', '--listen', 'h:1', '--tls-cert', 'c'],
      '--tls-cert, --tls-key and --tls-ca must be given together',
    ],
    [
      ['--config', 'x', '--listen', 'h:1', '--health-grace', '30'],
      '--health-grace must be a duration such as 30s',
    ],
    [['--config', 'x', '--listen', 'h:1', '--bogus'], "Unknown option '--bogus'"],
  ])('%j fails: %s', (argv, message) => {
    expect(() => parseControllerArgs(argv)).toThrow(message);
  });

  test('loopback detection', () => {
    expect(isLoopbackListen('127.0.0.1:7700')).toBe(true);
    expect(isLoopbackListen('127.1.2.3:7700')).toBe(true);
    expect(isLoopbackListen('[::1]:7700')).toBe(true);
    expect(isLoopbackListen('localhost:7700')).toBe(true);
    expect(isLoopbackListen('0.0.0.0:7700')).toBe(false);
    expect(isLoopbackListen('[::]:7700')).toBe(false);
    expect(isLoopbackListen('10.0.0.1:7700')).toBe(false);
    expect(splitHostPort('[fd00::1]:80')).toEqual({ host: 'fd00::1', port: 80 });
  });
});
