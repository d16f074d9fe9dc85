import { execFile } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { connect } from 'node:net';
import { promisify } from 'node:util';
import { decode, encode, streamEncode } from 'dns-packet';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DnsServer } from '../../agent/dns/server';
import { buildDnsIndex, type DnsCatalogInput, RCODE } from '../../agent/dns/zone';

const run = promisify(execFile);

const catalog: DnsCatalogInput = {
  domain: 'mesh.local',
  version: 3,
  services: [
    {
      name: 'web',
      namespace: 'default',
      vip: ['10.96.0.10', 'fd00::10'],
      ports: [{ name: 'http', port: 80 }],
    },
    {
      name: 'dns',
      namespace: 'kube-system',
      vip: '10.96.0.53',
      ports: [{ name: 'dns', port: 53, protocol: 'UDP' }],
    },
    {
      name: 'big',
      namespace: 'default',
      // Far more than fits in 512 (or 1232) bytes over UDP: resolvers must retry over TCP.
      vip: Array.from({ length: 100 }, (_, i) => `10.2.0.${i + 1}`),
      ports: [],
    },
  ],
};

let server: DnsServer;
let port: number;

beforeAll(async () => {
  // A real resolver is the point of these tests: no dig is a setup error, not a reason to skip.
  await run('dig', ['-v']).catch(() => {
    throw new Error('dig is not installed: apt-get install dnsutils (make setup installs it)');
  });
  server = new DnsServer({ logger: pino({ level: 'silent' }), index: buildDnsIndex(catalog) });
  port = await server.listen('127.0.0.1', 0);
});
afterAll(() => server.close());

async function dig(...args: string[]): Promise<{ status: string; flags: string; answers: string[] }> {
  const { stdout } = await run('dig', ['@127.0.0.1', '-p', String(port), '+time=2', '+tries=1', ...args]);
  const header = /status: (\w+)/.exec(stdout);
  const flags = /flags: ([a-z ]+);/.exec(stdout);
  const answerSection = stdout.split(';; ANSWER SECTION:\n')[1]?.split('\n\n')[0] ?? '';
  const answers = answerSection
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(/\s+/).slice(3).join(' '));
  return { status: header?.[1] ?? 'none', flags: flags?.[1] ?? '', answers };
}

describe('DnsServer with dig', () => {
  for (const transport of ['+notcp', '+tcp']) {
    it(`answers A, AAAA and SRV authoritatively over ${transport === '+tcp' ? 'TCP' : 'UDP'}`, async () => {
      const before = { ...server.stats };
      const a = await dig(transport, 'web.default.svc.mesh.local', 'A');
      expect(a).toEqual({ status: 'NOERROR', flags: 'qr aa rd', answers: ['A 10.96.0.10'] });
      expect((await dig(transport, 'web.default.svc.mesh.local', 'AAAA')).answers).toEqual(['AAAA fd00::10']);
      expect((await dig(transport, '_http._tcp.web.default.svc.mesh.local', 'SRV')).answers).toEqual([
        'SRV 0 100 80 web.default.svc.mesh.local.',
      ]);
      const key = transport === '+tcp' ? 'tcpQueries' : 'udpQueries';
      expect(server.stats[key] - before[key]).toBe(3);
    });

    it(`returns NXDOMAIN, NODATA and REFUSED over ${transport === '+tcp' ? 'TCP' : 'UDP'}`, async () => {
      expect(await dig(transport, 'nope.default.svc.mesh.local', 'A')).toMatchObject({
        status: 'NXDOMAIN',
        answers: [],
      });
      expect(await dig(transport, 'dns.kube-system.svc.mesh.local', 'AAAA')).toMatchObject({
        status: 'NOERROR',
        answers: [],
      });
      expect(await dig(transport, 'example.com', 'A')).toMatchObject({ status: 'REFUSED', answers: [] });
    });
  }

  it('shows the 5s TTL and the SOA of negative answers', async () => {
    const { stdout } = await run('dig', [
      '@127.0.0.1',
      '-p',
      String(port),
      '+noall',
      '+answer',
      'web.default.svc.mesh.local',
    ]);
    expect(stdout.trim()).toMatch(/^web\.default\.svc\.mesh\.local\.\s+5\s+IN\s+A\s+10\.96\.0\.10$/);
    const negative = await run('dig', [
      '@127.0.0.1',
      '-p',
      String(port),
      '+noall',
      '+authority',
      'x.mesh.local',
    ]);
    expect(negative.stdout).toMatch(
      /mesh\.local\.\s+5\s+IN\s+SOA\s+ns\.dns\.mesh\.local\. hostmaster\.mesh\.local\. 3 /,
    );
  });

  it('dig retries a truncated UDP answer over TCP and gets all 100 records', async () => {
    const before = server.stats.tcpQueries;
    const big = await dig('+noedns', 'big.default.svc.mesh.local', 'A');
    expect(big.status).toBe('NOERROR');
    expect(big.answers).toHaveLength(100);
    expect(server.stats.tcpQueries).toBeGreaterThan(before);
  });
});

describe("DnsServer with node's resolver (c-ares)", () => {
  const resolver = () => {
    const r = new Resolver({ timeout: 2000, tries: 1 });
    r.setServers([`127.0.0.1:${port}`]);
    return r;
  };

  it('resolves A, AAAA and SRV', async () => {
    const r = resolver();
    expect(await r.resolve4('web.default.svc.mesh.local', { ttl: true })).toEqual([
      { address: '10.96.0.10', ttl: 5 },
    ]);
    expect(await r.resolve6('web.default.svc.mesh.local')).toEqual(['fd00::10']);
    expect(await r.resolveSrv('_dns._udp.dns.kube-system.svc.mesh.local')).toEqual([
      { name: 'dns.kube-system.svc.mesh.local', port: 53, priority: 0, weight: 100 },
    ]);
  });

  it('maps NXDOMAIN, NODATA and REFUSED to their errors', async () => {
    const r = resolver();
    await expect(r.resolve4('nope.default.svc.mesh.local')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(r.resolve6('dns.kube-system.svc.mesh.local')).rejects.toMatchObject({ code: 'ENODATA' });
    await expect(r.resolve4('example.com')).rejects.toMatchObject({ code: 'EREFUSED' });
  });

  it('falls back to TCP on a truncated answer and gets every record', async () => {
    const before = server.stats.tcpQueries;
    const addresses = await resolver().resolve4('big.default.svc.mesh.local');
    expect(addresses).toHaveLength(100);
    expect(new Set(addresses)).toEqual(new Set(catalog.services[2]!.vip as string[]));
    expect(server.stats.tcpQueries).toBeGreaterThan(before);
  });

  it('sees a new zone after setIndex()', async () => {
    const next = buildDnsIndex({
      ...catalog,
      services: [{ name: 'api', namespace: 'prod', vip: '10.96.1.1', ports: [] }],
    });
    server.setIndex(next);
    try {
      const r = resolver();
      expect(await r.resolve4('api.prod.svc.mesh.local')).toEqual(['10.96.1.1']);
      await expect(r.resolve4('web.default.svc.mesh.local')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    } finally {
      server.setIndex(buildDnsIndex(catalog));
    }
  });
});

describe('DnsServer wire handling', () => {
  it('answers pipelined TCP queries split across arbitrary segments', async () => {
    const q = (id: number, name: string) =>
      streamEncode({ type: 'query', id, questions: [{ name, type: 'A' }] });
    const bytes = Buffer.concat([q(1, 'web.default.svc.mesh.local'), q(2, 'dns.kube-system.svc.mesh.local')]);
    const socket = connect(port, '127.0.0.1');
    const received: Buffer[] = [];
    socket.on('data', (d) => received.push(d));
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    // One byte at a time, with a pause, so the server sees every possible split.
    for (const byte of bytes) {
      socket.write(Buffer.from([byte]));
      await new Promise((r) => setImmediate(r));
    }
    for (let i = 0; i < 100 && Buffer.concat(received).length < 4; i++)
      await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    const all = Buffer.concat(received);
    const first = all.readUInt16BE(0);
    const one = decode(all.subarray(2, 2 + first));
    const two = decode(all.subarray(4 + first));
    expect([one.id, (one.answers![0] as { data: string }).data]).toEqual([1, '10.96.0.10']);
    expect([two.id, (two.answers![0] as { data: string }).data]).toEqual([2, '10.96.0.53']);
    socket.destroy();
  });

  it('answers FORMERR to a malformed UDP query and ignores runts', async () => {
    const socket = createSocket('udp4');
    const replies: Buffer[] = [];
    socket.on('message', (m) => replies.push(m));
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
    const header = encode({
      type: 'query',
      id: 777,
      questions: [{ name: 'web.default.svc.mesh.local', type: 'A' }],
    });
    // A header that promises a question, then garbage cut short.
    const malformed = Buffer.concat([header.subarray(0, 12), Buffer.from([0x40, 0x41])]);
    const before = server.stats.formErrors;
    socket.send(Buffer.from([1, 2, 3]), port, '127.0.0.1');
    socket.send(malformed, port, '127.0.0.1');
    for (let i = 0; i < 100 && replies.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    expect(replies).toHaveLength(1);
    const reply = decode(replies[0]!);
    expect([reply.id, (reply.flags ?? 0) & 0xf]).toEqual([777, RCODE.FORMERR]);
    expect(server.stats.formErrors - before).toBe(2);
    socket.close();
  });

  it('serves on IPv6 loopback too', async () => {
    const v6 = new DnsServer({ logger: pino({ level: 'silent' }), index: buildDnsIndex(catalog) });
    const p = await v6.listen('::1', 0);
    try {
      const r = new Resolver({ timeout: 2000, tries: 1 });
      r.setServers([`[::1]:${p}`]);
      expect(await r.resolve6('web.default.svc.mesh.local')).toEqual(['fd00::10']);
      const { stdout } = await run('dig', [
        '@::1',
        '-p',
        String(p),
        '+tcp',
        '+short',
        'web.default.svc.mesh.local',
      ]);
      expect(stdout.trim()).toBe('10.96.0.10');
    } finally {
      await v6.close();
    }
  });

  it('refuses to listen twice and frees the port on close', async () => {
    const other = new DnsServer({ logger: pino({ level: 'silent' }), index: buildDnsIndex(catalog) });
    const p = await other.listen('127.0.0.1', 0);
    await expect(other.listen('127.0.0.1', 0)).rejects.toThrow('dns server already listening');
    await other.close();
    const again = new DnsServer({ logger: pino({ level: 'silent' }), index: buildDnsIndex(catalog) });
    expect(await again.listen('127.0.0.1', p)).toBe(p);
    await again.close();
  });
});
