import type { AddressInfo } from 'node:net';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GrpcProber } from '../../agent/health/probe-grpc';
import { HttpProber } from '../../agent/health/probe-http';
import { TcpProber } from '../../agent/health/probe-tcp';
import type { HealthCheckSpec, ProbeTarget } from '../../agent/health/types';
import { close, closedPort, httpServer, tcpListener } from './support/servers';

function target(port: number, check: Partial<HealthCheckSpec> = {}, address = '127.0.0.1'): ProbeTarget {
  return {
    key: `default/web|${address}:${port}`,
    service: 'default/web',
    address,
    port,
    check: {
      protocol: 'tcp',
      intervalMs: 1000,
      timeoutMs: 1000,
      healthyThreshold: 1,
      unhealthyThreshold: 1,
      ...check,
    },
  };
}

const never = () => new AbortController().signal;

describe('TcpProber', () => {
  const prober = new TcpProber();

  it('succeeds on a listening port and closes its socket', async () => {
    const server = await tcpListener();
    let accepted = 0;
    server.on('connection', () => accepted++);
    expect(await prober.probe(target(server.port), never())).toEqual({ ok: true, reason: 'connected' });
    await new Promise((r) => setTimeout(r, 20));
    expect(accepted).toBe(1);
    const open = await new Promise<number>((resolve) => server.getConnections((_, n) => resolve(n)));
    expect(open).toBe(0);
    await close(server);
  });

  it('probes IPv6 backends', async () => {
    const { createServer } = await import('node:net');
    const v6 = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => v6.listen(0, '::1', () => resolve()));
    const port = (v6.address() as AddressInfo).port;
    expect(await prober.probe(target(port, {}, '::1'), never())).toEqual({ ok: true, reason: 'connected' });
    await close(v6);
  });

  it('reports a refused connect', async () => {
    expect(await prober.probe(target(await closedPort()), never())).toEqual({
      ok: false,
      reason: 'connect ECONNREFUSED',
    });
  });

  it('settles as aborted when the signal fires', async () => {
    const abort = new AbortController();
    abort.abort();
    expect(await prober.probe(target(1), abort.signal)).toEqual({ ok: false, reason: 'aborted' });
  });
});

describe('HttpProber', () => {
  const prober = new HttpProber();
  let statusToSend = 200;
  const seen: { path: string | undefined; host: string | undefined; connection: string | undefined }[] = [];
  let server: Awaited<ReturnType<typeof httpServer>>;

  beforeAll(async () => {
    server = await httpServer((req, res) => {
      seen.push({ path: req.url, host: req.headers.host, connection: req.headers.connection });
      res.writeHead(statusToSend, { 'content-type': 'text/plain' });
      res.end('x'.repeat(100_000));
    });
  });
  afterAll(() => close(server));
  afterEach(() => {
    seen.length = 0;
  });

  it('GETs the path and accepts 2xx/3xx by default', async () => {
    statusToSend = 200;
    expect(await prober.probe(target(server.port, { protocol: 'http', path: '/healthz' }), never())).toEqual({
      ok: true,
      reason: 'http 200',
    });
    expect(seen[0]).toEqual({ path: '/healthz', host: `127.0.0.1:${server.port}`, connection: 'close' });
    statusToSend = 302;
    expect((await prober.probe(target(server.port, { protocol: 'http' }), never())).ok).toBe(true);
    expect(seen[1]?.path).toBe('/');
  });

  it('fails on a status outside the range, with the status as reason', async () => {
    statusToSend = 503;
    expect(await prober.probe(target(server.port, { protocol: 'http' }), never())).toEqual({
      ok: false,
      reason: 'http 503',
    });
    statusToSend = 404;
    expect((await prober.probe(target(server.port, { protocol: 'http' }), never())).reason).toBe('http 404');
  });

  it('honours a custom expected range and Host header', async () => {
    statusToSend = 204;
    const check = {
      protocol: 'http' as const,
      expectedStatus: { min: 200, max: 200 },
      host: 'web.mesh.local',
    };
    expect(await prober.probe(target(server.port, check), never())).toEqual({
      ok: false,
      reason: 'http 204',
    });
    expect(seen[0]?.host).toBe('web.mesh.local');
    statusToSend = 200;
    expect((await prober.probe(target(server.port, check), never())).ok).toBe(true);
  });

  it('probes an IPv6 backend with a bracketed Host header', async () => {
    const { createServer } = await import('node:http');
    let host: string | undefined;
    const v6 = createServer((req, res) => {
      host = req.headers.host;
      res.end();
    });
    await new Promise<void>((resolve) => v6.listen(0, '::1', () => resolve()));
    const port = (v6.address() as AddressInfo).port;
    expect(await prober.probe(target(port, { protocol: 'http' }, '::1'), never())).toEqual({
      ok: true,
      reason: 'http 200',
    });
    expect(host).toBe(`[::1]:${port}`);
    await close(v6);
  });

  it('reports a refused connect', async () => {
    expect(await prober.probe(target(await closedPort(), { protocol: 'http' }), never())).toEqual({
      ok: false,
      reason: 'connect ECONNREFUSED',
    });
  });

  it('reports a connection reset after connect as an http error', async () => {
    const rude = await tcpListener();
    rude.removeAllListeners('connection');
    // Reset once the request arrives: the connect itself succeeded.
    rude.on('connection', (socket) => socket.once('data', () => socket.resetAndDestroy()));
    const outcome = await prober.probe(target(rude.port, { protocol: 'http' }), never());
    expect(outcome.ok).toBe(false);
    expect(outcome.reason).toMatch(/^http (ECONNRESET|socket hang up)$/);
    await close(rude);
  });

  it('aborts a hanging request and closes the connection', async () => {
    const hanging = await httpServer(() => {});
    const abort = new AbortController();
    const pending = prober.probe(target(hanging.port, { protocol: 'http' }), abort.signal);
    await new Promise((r) => setTimeout(r, 50));
    abort.abort();
    expect(await pending).toEqual({ ok: false, reason: 'aborted' });
    await new Promise((r) => setTimeout(r, 50));
    const open = await new Promise<number>((resolve) => hanging.getConnections((_, n) => resolve(n)));
    expect(open).toBe(0);
    await close(hanging);
  });
});

describe('GrpcProber', () => {
  const prober = new GrpcProber();
  const health = new HealthImplementation({ '': 'SERVING', 'web.v1.Web': 'NOT_SERVING' });
  let server: Server;
  let port: number;

  beforeAll(async () => {
    server = new Server();
    health.addToServer(server);
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
  });
  afterAll(async () => {
    prober.close();
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  });

  const grpc = (service?: string) => target(port, { protocol: 'grpc', grpcService: service });

  it('is healthy when the server reports SERVING', async () => {
    expect(await prober.probe(grpc(), never())).toEqual({ ok: true, reason: 'grpc SERVING' });
  });

  it('asks for the named service and fails on NOT_SERVING, then follows changes', async () => {
    expect(await prober.probe(grpc('web.v1.Web'), never())).toEqual({
      ok: false,
      reason: 'grpc NOT_SERVING',
    });
    health.setStatus('web.v1.Web', 'SERVING');
    expect(await prober.probe(grpc('web.v1.Web'), never())).toEqual({ ok: true, reason: 'grpc SERVING' });
  });

  it('reports an unknown service as NOT_FOUND', async () => {
    expect(await prober.probe(grpc('nope.v1.Nope'), never())).toEqual({
      ok: false,
      reason: 'grpc NOT_FOUND',
    });
  });

  it('reports a server without the health service as UNIMPLEMENTED', async () => {
    const bare = new Server();
    const barePort = await new Promise<number>((resolve, reject) =>
      bare.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    const t = target(barePort, { protocol: 'grpc' });
    expect(await prober.probe(t, never())).toEqual({ ok: false, reason: 'grpc UNIMPLEMENTED' });
    prober.release(t);
    bare.forceShutdown();
  });

  it('reports a refused connect, and sees the backend once it listens', async () => {
    const free = await closedPort();
    const t = target(free, { protocol: 'grpc', intervalMs: 200 });
    expect(await prober.probe(t, never())).toEqual({ ok: false, reason: 'connect ECONNREFUSED' });
    const late = new Server();
    new HealthImplementation({ '': 'SERVING' }).addToServer(late);
    await new Promise<number>((resolve, reject) =>
      late.bindAsync(`127.0.0.1:${free}`, ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    // The cached channel's reconnect backoff is capped at the interval: it recovers within a few probes.
    let outcome = await prober.probe(t, never());
    for (let i = 0; i < 20 && !outcome.ok; i++) {
      await new Promise((r) => setTimeout(r, 100));
      outcome = await prober.probe(t, never());
    }
    expect(outcome).toEqual({ ok: true, reason: 'grpc SERVING' });
    prober.release(t);
    late.forceShutdown();
  });

  it('settles as aborted when the signal fires mid-call', async () => {
    // A TCP listener that never speaks HTTP/2: the call would hang until its deadline.
    const mute = await tcpListener();
    mute.removeAllListeners('connection');
    const sockets: import('node:net').Socket[] = [];
    mute.on('connection', (s) => sockets.push(s));
    const abort = new AbortController();
    const t = target(mute.port, { protocol: 'grpc', timeoutMs: 10_000 });
    const pending = prober.probe(t, abort.signal);
    setTimeout(() => abort.abort(), 100);
    const started = Date.now();
    expect(await pending).toEqual({ ok: false, reason: 'aborted' });
    expect(Date.now() - started).toBeLessThan(5000);
    prober.release(t);
    for (const s of sockets) s.destroy();
    await close(mute);
    expect((mute.address() as AddressInfo | null) ?? null).toBeNull();
  });
});
