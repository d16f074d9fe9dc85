import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import YAML from 'yaml';
import {
  CATALOG_DEFAULTS,
  CatalogParseCache,
  formatCatalogError,
  formatDuration,
  normaliseIp,
  parseCatalog,
  parseDuration,
} from '../../controller/catalog';
import { resplitJsonServices, splitJsonServices } from '../../controller/catalog/json-split';

const example = readFileSync(join(__dirname, 'fixtures/issue-example.yaml'), 'utf8');

/** A valid one-service catalog with `patch` merged into services[0] (null deletes a field). */
function withService(patch: Record<string, unknown>, extra: Record<string, unknown>[] = []): string {
  const base: Record<string, unknown> = {
    name: 'web',
    vip: '10.96.0.10',
    ports: [{ name: 'http', port: 80, targetPort: 8080 }],
    backends: [{ address: '10.0.1.11', node: 'node-a' }],
  };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete base[k];
    else base[k] = v;
  }
  return YAML.stringify({ services: [base, ...extra] });
}

function errorsOf(text: string): string[] {
  const result = parseCatalog(text, 'test.yaml');
  if (result.ok) throw new Error('expected the catalog to be invalid');
  return result.errors.map(formatCatalogError);
}

describe('parseCatalog: the issue example', () => {
  test('parses, normalises and fills defaults', () => {
    const result = parseCatalog(example, 'example.yaml');
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const [web] = result.catalog.services;
    expect(result.catalog.domain).toBe('mesh.local');
    expect(web).toMatchObject({
      key: 'default/web',
      vips: ['10.96.0.10'],
      ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
      algorithm: 'weighted',
      affinity: { mode: 'none', timeoutMs: 3 * 3_600_000 },
      trafficDistribution: 'any',
      healthCheck: {
        protocol: 'http',
        path: '/healthz',
        intervalMs: 1000,
        timeoutMs: 500,
        healthyThreshold: 2,
        unhealthyThreshold: 2,
        expectedStatus: { min: 200, max: 399 },
        port: null,
      },
      outlierDetection: { consecutiveFailures: 3, baseEjectionTimeMs: 5000, maxEjectionPercent: 50 },
    });
    expect(web?.backends).toEqual([
      { address: '10.0.1.11', port: null, weight: 3, node: 'node-a', zone: 'zone-1' },
      { address: '10.0.2.12', port: 8081, weight: 1, node: 'node-b', zone: 'zone-2' },
      { address: '192.0.2.7', port: null, weight: CATALOG_DEFAULTS.backendWeight, node: null, zone: null },
    ]);
  });

  test('the result is deep-frozen', () => {
    const result = parseCatalog(example, 'example.yaml');
    if (!result.ok) throw new Error('invalid');
    const web = result.catalog.services[0]!;
    expect(Object.isFrozen(result.catalog)).toBe(true);
    expect(Object.isFrozen(web.backends[0])).toBe(true);
    expect(Object.isFrozen(web.healthCheck?.expectedStatus)).toBe(true);
    expect(() => {
      (web.backends as unknown as unknown[]).push({});
    }).toThrow(TypeError);
  });

  test('the same document as JSON parses to the same catalog', () => {
    const asJson = JSON.stringify(YAML.parse(example));
    const a = parseCatalog(example, 'a.yaml');
    const b = parseCatalog(asJson, 'a.json');
    expect(b).toEqual(a);
  });

  test('minimal service gets every default', () => {
    const result = parseCatalog('services: [{ name: db, vip: "fd00::a", ports: [{ port: 5432 }] }]', 'x');
    if (!result.ok) throw new Error(result.errors.map(formatCatalogError).join('\n'));
    expect(result.catalog.domain).toBe(CATALOG_DEFAULTS.domain);
    expect(result.catalog.services[0]).toEqual({
      key: 'default/db',
      name: 'db',
      namespace: 'default',
      vips: ['fd00::a'],
      externalIPs: [],
      ports: [{ name: null, port: 5432, targetPort: 5432, protocol: 'TCP' }],
      algorithm: CATALOG_DEFAULTS.algorithm,
      affinity: { mode: 'none', timeoutMs: 10_800_000 },
      trafficDistribution: 'any',
      healthCheck: null,
      outlierDetection: null,
      backends: [],
    });
  });

  test('dual-stack VIPs are normalised, IPv4 first', () => {
    const result = parseCatalog(withService({ vip: ['FD00:0:0::0A', '10.96.0.11'] }), 'x');
    if (!result.ok) throw new Error('invalid');
    expect(result.catalog.services[0]?.vips).toEqual(['10.96.0.11', 'fd00::a']);
  });

  test('the same VIP:port with different protocols is fine', () => {
    const text = withService({
      ports: [
        { name: 'dns', port: 53, protocol: 'UDP' },
        { name: 'dns-tcp', port: 53, protocol: 'TCP' },
      ],
    });
    expect(parseCatalog(text, 'x').ok).toBe(true);
  });
});

describe('parseCatalog: every error names its path and reason', () => {
  const cases: [string, string, string[]][] = [
    [
      'weight out of range',
      withService({ backends: [{ address: '10.0.1.11', weight: 70000 }] }),
      ['services[0].backends[0].weight: must be an integer from 0 to 65535'],
    ],
    [
      'fractional weight',
      withService({ backends: [{ address: '10.0.1.11', weight: 1.5 }] }),
      ['services[0].backends[0].weight: must be an integer from 0 to 65535'],
    ],
    [
      'weight as a string',
      withService({ backends: [{ address: '10.0.1.11', weight: '3' }] }),
      ['services[0].backends[0].weight: must be an integer from 0 to 65535'],
    ],
    [
      'bad backend address',
      withService({ backends: [{ address: '10.0.1' }] }),
      ['services[0].backends[0].address: must be an IPv4 or IPv6 address'],
    ],
    [
      'IPv4 with leading zeros',
      withService({ backends: [{ address: '010.0.1.1' }] }),
      ['services[0].backends[0].address: must be an IPv4 or IPv6 address'],
    ],
    [
      'IPv6 with a zone id',
      withService({ backends: [{ address: 'fe80::1%eth0' }] }),
      ['services[0].backends[0].address: must be an IPv4 or IPv6 address'],
    ],
    [
      'host name instead of address',
      withService({ vip: 'web.example.com' }),
      ['services[0].vip: must be an IPv4 or IPv6 address'],
    ],
    ['CIDR VIP', withService({ vip: '10.96.0.0/24' }), ['services[0].vip: must be an IPv4 or IPv6 address']],
    [
      'unspecified VIP',
      withService({ vip: '0.0.0.0' }),
      ['services[0].vip: must not be the unspecified address'],
    ],
    [
      'two IPv4 VIPs',
      withService({ vip: ['10.96.0.10', '10.96.0.11'] }),
      ['services[0].vip[1]: a second IPv4 VIP is not allowed (one per address family)'],
    ],
    [
      'three VIPs',
      withService({ vip: ['10.96.0.10', 'fd00::1', 'fd00::2'] }),
      ['services[0].vip: must be an IP address or a list of one IPv4 and/or one IPv6 address'],
    ],
    ['missing vip', withService({ vip: null }), ['services[0].vip: is required']],
    [
      'vip of the wrong type',
      withService({ vip: 42 }),
      ['services[0].vip: must be an IP address or a list of one IPv4 and/or one IPv6 address'],
    ],
    [
      'port 0',
      withService({ ports: [{ port: 0 }] }),
      ['services[0].ports[0].port: must be an integer from 1 to 65535'],
    ],
    [
      'targetPort too big',
      withService({ ports: [{ port: 80, targetPort: 65536 }] }),
      ['services[0].ports[0].targetPort: must be an integer from 1 to 65535'],
    ],
    [
      'lowercase protocol',
      withService({ ports: [{ port: 80, protocol: 'tcp' }] }),
      ['services[0].ports[0].protocol: must be one of: TCP, UDP'],
    ],
    ['no ports', withService({ ports: [] }), ['services[0].ports: must list at least one port']],
    ['missing ports', withService({ ports: null }), ['services[0].ports: is required']],
    [
      'unnamed port among several',
      withService({ ports: [{ name: 'http', port: 80 }, { port: 443 }] }),
      ['services[0].ports[1].name: is required when a service has several ports'],
    ],
    [
      'duplicate port name',
      withService({
        ports: [
          { name: 'http', port: 80 },
          { name: 'http', port: 81 },
        ],
      }),
      ['services[0].ports[1].name: duplicate port name http (also services[0].ports[0])'],
    ],
    [
      'duplicate port within a service',
      withService({
        ports: [
          { name: 'a', port: 80 },
          { name: 'b', port: 80 },
        ],
      }),
      ['services[0].ports[1]: duplicate port 80/TCP (also services[0].ports[0])'],
    ],
    [
      'bad name',
      withService({ name: 'Web_1' }),
      [
        "services[0].name: must be a DNS label: lowercase letters, digits and '-', starting with a letter, at most 63 characters",
      ],
    ],
    [
      'name too long',
      withService({ name: `a${'b'.repeat(63)}` }),
      [
        "services[0].name: must be a DNS label: lowercase letters, digits and '-', starting with a letter, at most 63 characters",
      ],
    ],
    ['missing name', withService({ name: null }), ['services[0].name: is required']],
    [
      'bad algorithm',
      withService({ algorithm: 'fastest' }),
      ['services[0].algorithm: must be one of: random, weighted, round-robin, least-connections'],
    ],
    [
      'bad trafficDistribution',
      withService({ trafficDistribution: 'PreferClose' }),
      ['services[0].trafficDistribution: must be one of: any, PreferNode, PreferZone'],
    ],
    [
      'bad affinity mode',
      withService({ affinity: { mode: 'cookie' } }),
      ['services[0].affinity.mode: must be one of: none, client'],
    ],
    [
      'duration with a space',
      withService({ affinity: { mode: 'client', timeout: '3 h' } }),
      ['services[0].affinity.timeout: must be a duration such as 500ms, 1s, 5m or 3h'],
    ],
    [
      'duration as a bare number',
      withService({ healthCheck: { protocol: 'tcp', interval: 5 } }),
      ['services[0].healthCheck.interval: must be a duration such as 500ms, 1s, 5m or 3h'],
    ],
    [
      'fractional duration',
      withService({ healthCheck: { protocol: 'tcp', interval: '1.5s' } }),
      ['services[0].healthCheck.interval: must be a duration such as 500ms, 1s, 5m or 3h'],
    ],
    [
      'unknown duration unit',
      withService({ healthCheck: { protocol: 'tcp', timeout: '1d' } }),
      ['services[0].healthCheck.timeout: must be a duration such as 500ms, 1s, 5m or 3h'],
    ],
    [
      'interval too short',
      withService({ healthCheck: { protocol: 'tcp', interval: '10ms', timeout: '10ms' } }),
      ['services[0].healthCheck.interval: must be at least 100ms'],
    ],
    [
      'timeout longer than interval',
      withService({ healthCheck: { protocol: 'tcp', interval: '1s', timeout: '2s' } }),
      ['services[0].healthCheck.timeout: must not be longer than interval'],
    ],
    [
      'missing health check protocol',
      withService({ healthCheck: { interval: '1s' } }),
      ['services[0].healthCheck.protocol: is required'],
    ],
    [
      'bad health check protocol',
      withService({ healthCheck: { protocol: 'icmp' } }),
      ['services[0].healthCheck.protocol: must be one of: tcp, http, grpc'],
    ],
    [
      'path on a tcp check',
      withService({ healthCheck: { protocol: 'tcp', path: '/healthz' } }),
      ['services[0].healthCheck.path: is only valid with protocol http'],
    ],
    [
      'relative http path',
      withService({ healthCheck: { protocol: 'http', path: 'healthz' } }),
      ["services[0].healthCheck.path: must be an HTTP path starting with '/'"],
    ],
    [
      'bad expected status',
      withService({ healthCheck: { protocol: 'http', expectedStatus: '300-200' } }),
      [
        "services[0].healthCheck.expectedStatus: must be an HTTP status code from 100 to 599 or a range such as '200-399'",
      ],
    ],
    [
      'grpc service name on http',
      withService({ healthCheck: { protocol: 'http', service: 'x' } }),
      ['services[0].healthCheck.service: is only valid with protocol grpc'],
    ],
    [
      'threshold zero',
      withService({ healthCheck: { protocol: 'tcp', healthyThreshold: 0 } }),
      ['services[0].healthCheck.healthyThreshold: must be an integer from 1 to 100'],
    ],
    [
      'maxEjectionPercent over 100',
      withService({ outlierDetection: { maxEjectionPercent: 101 } }),
      ['services[0].outlierDetection.maxEjectionPercent: must be an integer from 0 to 100'],
    ],
    [
      'unknown field in a backend',
      withService({ backends: [{ address: '10.0.1.11', wieght: 2 }] }),
      ['services[0].backends[0].wieght: unknown field'],
    ],
    ['unknown field in a service', withService({ vips: '10.0.0.1' }), ['services[0].vips: unknown field']],
    [
      'bad node name',
      withService({ backends: [{ address: '10.0.1.11', node: 'Node_A' }] }),
      [
        'services[0].backends[0].node: must be a node name: lowercase DNS labels separated by dots, at most 253 characters',
      ],
    ],
    [
      'duplicate backend',
      withService({
        backends: [
          { address: '10.0.1.11', node: 'a' },
          { address: '10.0.1.11', node: 'b' },
        ],
      }),
      ['services[0].backends[1]: duplicate backend 10.0.1.11:0 (also services[0].backends[0])'],
    ],
    [
      'backends not a list',
      withService({ backends: { address: '10.0.1.11' } }),
      ['services[0].backends: must be a list of backends'],
    ],
    [
      'service name clash',
      withService({}, [{ name: 'web', vip: '10.96.0.20', ports: [{ port: 80 }] }]),
      ['services[1].name: service default/web is already defined at services[0]'],
    ],
    [
      'duplicate VIP:port across services',
      withService({}, [{ name: 'api', vip: '10.96.0.10', ports: [{ port: 80 }] }]),
      ['services[1].ports[0]: 10.96.0.10:80/TCP is already used by services[0]'],
    ],
    [
      'duplicate IPv6 VIP:port after normalisation',
      withService({ vip: 'fd00::10' }, [{ name: 'api', vip: 'FD00:0::10', ports: [{ port: 80 }] }]),
      ['services[1].ports[0]: [fd00::10]:80/TCP is already used by services[0]'],
    ],
    [
      'bad domain',
      `domain: Mesh_Local\n${withService({})}`,
      ['domain: must be a DNS domain of lowercase labels separated by dots, such as mesh.local'],
    ],
    ['unknown top-level field', `servics: []\nservices: []\n`, ['servics: unknown field']],
    ['services missing', 'domain: mesh.local\n', ['services: is required']],
    ['not a mapping', '- a\n- b\n', ['the catalog must be a mapping with a services list']],
    [
      'YAML syntax error',
      'services:\n  - name: web\n   vip: 1\n',
      ['test.yaml: invalid YAML at line 3, column 1: Sequence item without - indicator'],
    ],
    [
      'duplicate YAML key',
      'services: []\nservices: []\n',
      ['test.yaml: invalid YAML at line 2, column 1: Map keys must be unique'],
    ],
  ];

  test.each(cases)('%s', (_name, text, expected) => {
    expect(errorsOf(text)).toEqual(expected);
  });

  test('errors in several services are all reported', () => {
    const text = YAML.stringify({
      services: [
        { name: 'a', vip: '10.96.0.1', ports: [{ port: 80 }], backends: [{ address: 'x' }] },
        { name: 'b', vip: '10.96.0.2', ports: [{ port: 99999 }] },
        {
          name: 'c',
          vip: '10.96.0.3',
          ports: [{ port: 80 }],
          backends: [{ address: '10.0.0.1', weight: -1 }],
        },
      ],
    });
    expect(errorsOf(text)).toEqual([
      'services[0].backends[0].address: must be an IPv4 or IPv6 address',
      'services[1].ports[0].port: must be an integer from 1 to 65535',
      'services[2].backends[0].weight: must be an integer from 0 to 65535',
    ]);
  });
});

describe('parseCatalog: externalIPs', () => {
  const dsr = { ports: [{ port: 80 }], backends: [{ address: '10.0.1.11' }] };

  test('are normalised, kept apart from the VIPs and default to none', () => {
    const result = parseCatalog(withService({ ...dsr, externalIPs: ['192.0.2.10', '2001:DB8::10'] }), 't');
    expect(result.ok && result.catalog.services[0]?.externalIPs).toEqual(['192.0.2.10', '2001:db8::10']);
    const none = parseCatalog(withService({}), 't');
    expect(none.ok && none.catalog.services[0]?.externalIPs).toEqual([]);
  });

  test.each([
    [
      'not a list',
      { externalIPs: '192.0.2.10' },
      ['services[0].externalIPs: must be a list of IP addresses'],
    ],
    [
      'a bad address',
      { externalIPs: ['192.0.2'] },
      ['services[0].externalIPs[0]: must be an IPv4 or IPv6 address'],
    ],
    [
      'the unspecified address',
      { externalIPs: ['0.0.0.0'] },
      ['services[0].externalIPs[0]: must not be the unspecified address'],
    ],
    [
      'twice',
      { externalIPs: ['192.0.2.10', '192.0.2.10'] },
      ['services[0].externalIPs[1]: duplicate external IP 192.0.2.10 (also services[0].externalIPs[0])'],
    ],
    [
      'the VIP itself',
      { externalIPs: ['10.96.0.10'] },
      ["services[0].externalIPs[0]: 10.96.0.10 is already the service's vip"],
    ],
  ])('reject %s', (_, patch, expected) => {
    expect(errorsOf(withService({ ...dsr, ...patch }))).toEqual(expected);
  });

  test('need backends that serve on the service port (direct server return keeps it)', () => {
    expect(
      errorsOf(
        withService({
          externalIPs: ['192.0.2.10'],
          backends: [
            { address: '10.0.1.11' },
            { address: '10.0.1.12', port: 9090 },
            { address: '10.0.1.13', port: 80 },
          ],
        }),
      ),
    ).toEqual([
      'services[0].ports[0].targetPort: must equal port (80) when the service has externalIPs: the XDP load balancer forwards with direct server return, which keeps the destination port',
      'services[0].backends[1].port: must be left out (or equal the service port) when the service has externalIPs: direct server return keeps the destination port',
    ]);
  });

  test("clash with another service's VIP or external IP on the same port", () => {
    const other = { name: 'api', vip: '10.96.0.11', externalIPs: ['192.0.2.10'], ...dsr };
    expect(errorsOf(withService({ ...dsr, externalIPs: ['192.0.2.10'] }, [other]))).toEqual([
      'services[1].ports[0]: 192.0.2.10:80/TCP is already used by services[0]',
    ]);
    const usesVip = { name: 'api', vip: '10.96.0.11', externalIPs: ['10.96.0.10'], ...dsr };
    expect(errorsOf(withService(dsr, [usesVip]))).toEqual([
      'services[1].ports[0]: 10.96.0.10:80/TCP is already used by services[0]',
    ]);
  });
});

describe('durations and addresses', () => {
  test.each([
    ['500ms', 500],
    ['1s', 1000],
    ['5m', 300_000],
    ['3h', 10_800_000],
    ['1m30s', 90_000],
    ['0s', 0],
  ])('%s = %i ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
    expect(parseDuration(formatDuration(ms))).toBe(ms);
  });

  test.each(['', '1', '1.5s', ' 1s', '1S', '-1s', '1d', 's', '1s ', '100000h'])('rejects %j', (text) => {
    expect(parseDuration(text)).toBeNull();
  });

  test.each([
    ['10.0.0.1', '10.0.0.1'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['::ffff:10.0.0.1', '::ffff:a00:1'],
    ['fd00::A', 'fd00::a'],
  ])('normalises %s', (text, expected) => {
    expect(normaliseIp(text)).toBe(expected);
  });

  test.each(['10.0.0', '10.0.0.256', '010.0.0.1', 'fe80::1%lo', '10.0.0.0/8', 'localhost', ''])(
    'rejects %j',
    (text) => {
      expect(normaliseIp(text)).toBeNull();
    },
  );

  test('defaults are valid durations', () => {
    for (const text of [
      CATALOG_DEFAULTS.affinity.timeout,
      CATALOG_DEFAULTS.healthCheck.interval,
      CATALOG_DEFAULTS.healthCheck.timeout,
      CATALOG_DEFAULTS.outlierDetection.baseEjectionTime,
    ]) {
      expect(parseDuration(text)).not.toBeNull();
    }
  });
});

describe('re-parsing with a cache', () => {
  const doc = (weight: number) => ({
    domain: 'mesh.local',
    services: [
      { name: 'a', vip: '10.96.0.1', ports: [{ port: 80 }], backends: [{ address: '10.0.0.1', weight }] },
      { name: 'b', vip: '10.96.0.2', ports: [{ port: 80 }], backends: [{ address: '10.0.0.2' }] },
      { name: 'c', vip: '10.96.0.3', ports: [{ name: 'x', port: 80 }], backends: [] },
    ],
  });

  test.each([
    ['JSON', (d: object) => JSON.stringify(d, null, 2)],
    ['compact JSON', (d: object) => JSON.stringify(d)],
    ['YAML', (d: object) => YAML.stringify(d)],
  ])('%s: same result as without a cache; unchanged services are the same objects', (_name, write) => {
    const cache = new CatalogParseCache();
    const first = parseCatalog(write(doc(1)), 'x', { cache });
    const second = parseCatalog(write(doc(2)), 'x', { cache });
    expect(second).toEqual(parseCatalog(write(doc(2)), 'x'));
    if (!first.ok || !second.ok) throw new Error('invalid');
    expect(second.catalog.services[0]).not.toBe(first.catalog.services[0]);
    expect(second.catalog.services[0]?.backends[0]?.weight).toBe(2);
    expect(second.catalog.services[1]).toBe(first.catalog.services[1]);
    expect(second.catalog.services[2]).toBe(first.catalog.services[2]);
    expect(cache.size).toBe(3);
  });

  test('errors are the same with and without a cache, also for cached services that now clash', () => {
    const cache = new CatalogParseCache();
    parseCatalog(JSON.stringify(doc(1)), 'x', { cache });
    const bad = doc(1);
    bad.services.push({ name: 'a', vip: '10.96.0.2', ports: [{ port: 80 }], backends: [] });
    const text = JSON.stringify(bad);
    const withCache = parseCatalog(text, 'x', { cache });
    expect(withCache).toEqual(parseCatalog(text, 'x'));
    expect(withCache.ok ? [] : withCache.errors.map(formatCatalogError)).toEqual([
      'services[3].name: service default/a is already defined at services[0]',
      'services[3].ports[0]: 10.96.0.2:80/TCP is already used by services[1]',
    ]);
  });

  test.each([
    ['renamed onto another', (d: ReturnType<typeof doc>) => Object.assign(d.services[2]!, { name: 'a' })],
    [
      'moved onto another VIP',
      (d: ReturnType<typeof doc>) => Object.assign(d.services[2]!, { vip: '10.96.0.1' }),
    ],
    ['an invalid one between', (d: ReturnType<typeof doc>) => Object.assign(d.services[1]!, { vip: 'nope' })],
  ])('a changed service %s: same errors as without a cache, in the same order', (_what, edit) => {
    const cache = new CatalogParseCache();
    expect(parseCatalog(JSON.stringify(doc(1)), 'x', { cache }).ok).toBe(true);
    const bad = doc(1);
    edit(bad);
    const text = JSON.stringify(bad);
    const withCache = parseCatalog(text, 'x', { cache });
    expect(withCache.ok).toBe(false);
    expect(withCache).toEqual(parseCatalog(text, 'x'));
    // And back: the last good catalog is what the shortcut compares with.
    expect(parseCatalog(JSON.stringify(doc(3)), 'x', { cache })).toEqual(
      parseCatalog(JSON.stringify(doc(3)), 'x'),
    );
  });

  test('JSON with a syntax error inside a service falls back to the normal error', () => {
    const cache = new CatalogParseCache();
    parseCatalog(JSON.stringify(doc(1)), 'x', { cache });
    const text = JSON.stringify(doc(1)).replace('"name":"b"', '"name":"b",,');
    expect(parseCatalog(text, 'x.json', { cache })).toEqual(parseCatalog(text, 'x.json'));
  });
});

describe('splitJsonServices', () => {
  test.each([
    '{"services":[]}',
    ' { "domain" : "x.y" , "services" : [ {"name":"a","s":"}]\\"{["} , {"n":[1,[2,{"a":"b"}]],"t":true,"f":null,"x":-1.5e3} ] } ',
    '{"services":[{"a":1}],"domain":"mesh.local"}',
    '{"a":{"services":[1]},"services":[{"b":"\\\\"}]}',
  ])('splits %s like JSON.parse', (text) => {
    const split = splitJsonServices(text);
    expect(split).not.toBeNull();
    const whole = JSON.parse(text);
    expect(split!.services.map((s) => JSON.parse(s))).toEqual(whole.services);
    expect(JSON.parse(split!.skeleton)).toEqual({ ...whole, services: [] });
  });

  test.each([
    '[]',
    '{"domain":"x"}',
    '{"services":{}}',
    '{"services":[],"services":[]}',
    '{"services":[1,]}',
    '{"services":[{"a":1}]} x',
    '{"services":[{"a":"unterminated}]}',
  ])('declines %s', (text) => {
    expect(splitJsonServices(text)).toBeNull();
  });
});

describe('resplitJsonServices', () => {
  const base = JSON.stringify(
    {
      domain: 'mesh.local',
      services: [{ name: 'a', s: '}]"{[' }, { name: 'b', n: [1, 2] }, { name: 'c' }, { name: 'd', x: 'y\\' }],
    },
    null,
    1,
  );
  test.each([
    ['an element edited', base.replace('"n": [', '"n": [0,')],
    ['the first element edited', base.replace('"a"', '"a2"')],
    ['the last element edited', base.replace('"d"', '"dd"')],
    ['an element inserted', base.replace('{\n   "name": "c"', '{"name":"new"},{\n   "name": "c"')],
    ['an element deleted', base.replace(/,\s*\{\s*"name": "c"\s*\}/, '')],
    ['every element deleted', '{"domain":"mesh.local","services":[]}'],
    ['whitespace between elements', base.replace('},\n  {', '} ,\n\n  {')],
    ['the domain edited', base.replace('mesh.local', 'other.local')],
    ['a key after the array', base.replace(/\}\s*$/, ',"z":1}')],
    ['a broken element', base.replace('"name": "b"', '"name": "b",,')],
    ['an unterminated string', base.replace('"name": "c"', '"name": "c')],
    ['nothing', base],
  ])('%s: the same as a full split', (what, text) => {
    expect(text === base).toBe(what === 'nothing');
    const prev = splitJsonServices(base)!;
    expect(resplitJsonServices(base, prev, text)).toEqual(splitJsonServices(text));
  });

  test('keeps the very same strings for the untouched elements', () => {
    const prev = splitJsonServices(base)!;
    const next = resplitJsonServices(base, prev, base.replace('"name": "b"', '"name": "bb"'))!;
    expect(next.services[0]).toBe(prev.services[0]);
    expect(next.services[3]).toBe(prev.services[3]);
    expect(next.services[1]).toContain('"bb"');
  });
});
