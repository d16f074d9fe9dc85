import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { service as healthService } from 'grpc-health-check';
import { afterEach, describe, expect, test } from 'vitest';
import type { CatalogUpdate } from '../../controller/agent-client';
import {
  type AgentMessage,
  type ControllerMessage,
  loadPackageDefinition,
  SERVICE_NAME,
} from '../../controller/protocol';
import {
  catalogDoc,
  type Harness,
  metricValue,
  type ServiceSpec,
  startController,
  TestAgent,
  waitFor,
} from './helpers';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

function services(n: number, weight = 1): ServiceSpec[] {
  return Array.from({ length: n }, (_, i) => ({
    name: `svc-${i}`,
    vip: `10.96.${Math.floor(i / 250)}.${(i % 250) + 1}`,
    backends: [
      { address: `10.0.${Math.floor(i / 250)}.${(i % 250) + 1}`, node: 'node-a', weight },
      { address: `10.1.${Math.floor(i / 250)}.${(i % 250) + 1}`, node: 'node-b', weight },
    ],
  }));
}

async function controller(
  doc: object | string,
  options: Parameters<typeof startController>[1] = {},
): Promise<Harness> {
  const h = await startController(doc, options);
  cleanups.push(() => h.stop());
  return h;
}

function agent(
  h: { target: string },
  node: string,
  options: ConstructorParameters<typeof TestAgent>[2] = {},
) {
  const a = new TestAgent(h.target, node, options).start();
  cleanups.push(() => a.stop());
  return a;
}

/** A raw Sync stream: the test controls every message and when (or whether) to read. */
function rawStream(target: string, serialize?: (m: unknown) => Buffer) {
  const def = loadPackageDefinition()[SERVICE_NAME] as protoLoader.ServiceDefinition;
  const sync = def.Sync as unknown as grpc.MethodDefinition<AgentMessage, ControllerMessage>;
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': -1,
  });
  const call = client.makeBidiStreamRequest(
    sync.path,
    (serialize ?? sync.requestSerialize) as (m: unknown) => Buffer,
    sync.responseDeserialize,
  );
  const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  call.on('error', () => {});
  cleanups.push(() => {
    call.cancel();
    client.close();
  });
  return { call, status };
}

describe('snapshot, delta, ACK and NACK', () => {
  test('an agent gets a snapshot, then per-service deltas, and its ACKs are recorded', async () => {
    const h = await controller(catalogDoc(services(3)));
    const a = agent(h, 'node-a');
    await waitFor(() => a.client.applied.version === 1, 'snapshot ACK');
    const snapshot = a.updates[0]!;
    expect(snapshot.kind).toBe('snapshot');
    expect(snapshot.upserts.map((s) => s.key)).toEqual(['default/svc-0', 'default/svc-1', 'default/svc-2']);
    expect(snapshot.upserts[0]?.backends[0]).toMatchObject({
      address: '10.0.0.1',
      node: 'node-a',
      health: 'unknown',
    });
    await waitFor(() => h.server.session('node-a')?.ackedVersion === 1, 'ACK recorded');
    const appliedAt1 = a.client.applied;
    expect([...appliedAt1.services.keys()]).toEqual(['default/svc-0', 'default/svc-1', 'default/svc-2']);

    // Change one service's weight and remove another.
    const next = services(3);
    next[1]!.backends[0]!.weight = 7;
    h.write(catalogDoc([next[0]!, next[1]!]));
    await waitFor(() => a.client.applied.version === 2, 'delta ACK');
    const delta = a.updates[1]!;
    expect(delta).toMatchObject({ kind: 'delta', version: 2, baseVersion: 1, deletes: ['default/svc-2'] });
    expect(delta.upserts.map((s) => s.key)).toEqual(['default/svc-1']);
    expect(delta.upserts[0]?.backends[0]?.weight).toBe(7);
    // The applied state handed out earlier is a snapshot: later ACKs do not change it.
    expect(appliedAt1.version).toBe(1);
    expect(appliedAt1.services.size).toBe(3);
    expect([...a.client.applied.services.keys()]).toEqual(['default/svc-0', 'default/svc-1']);
    expect(a.client.applied.services.get('default/svc-1')).toBe(delta.upserts[0]?.revision);
    expect(a.client.applied.services.get('default/svc-1')).not.toBe(appliedAt1.services.get('default/svc-1'));
    expect(a.keys()).toEqual(['default/svc-0', 'default/svc-1']);

    await waitFor(() => h.server.session('node-a')?.ackedVersion === 2, 'ACK of the delta recorded');
    expect(h.server.status().agents).toEqual([
      expect.objectContaining({ node: 'node-a', zone: 'zone-1', ackedVersion: 2, sentVersion: 2, lag: 0 }),
    ]);
    expect(await metricValue(h.registry, 'sluice_controller_agent_version_lag', { node: 'node-a' })).toBe(0);
    expect(await metricValue(h.registry, 'sluice_controller_connected_agents')).toBe(1);
    expect(await metricValue(h.registry, 'sluice_controller_catalog_version')).toBe(2);
    const histogram = await h.registry.getSingleMetric('sluice_controller_push_ack_seconds')!.get();
    expect(
      histogram.values.find(
        (v) => (v as { metricName?: string }).metricName === 'sluice_controller_push_ack_seconds_count',
      )?.value,
    ).toBe(2);
  });

  test('a NACK is recorded, the agent keeps its state, and the next change comes from the last ACKed version', async () => {
    const h = await controller(catalogDoc(services(3)));
    const a = agent(h, 'node-a', { decide: (u) => (u.version === 2 ? 'map full: services' : null) });
    await waitFor(() => a.client.applied.version === 1, 'snapshot');

    const v2 = services(3);
    v2[0]!.backends[0]!.weight = 2;
    h.write(catalogDoc(v2));
    await waitFor(() => h.server.session('node-a')?.lastNack, 'NACK recorded');
    expect(h.server.session('node-a')?.lastNack).toEqual({ version: 2, reason: 'map full: services' });
    expect(await metricValue(h.registry, 'sluice_controller_nacks_total', { node: 'node-a' })).toBe(1);
    expect(a.client.applied.version).toBe(1);
    expect(h.server.session('node-a')?.ackedVersion).toBe(1);
    expect(await metricValue(h.registry, 'sluice_controller_agent_version_lag', { node: 'node-a' })).toBe(1);

    const v3 = services(3);
    v3[0]!.backends[0]!.weight = 2;
    v3[2]!.backends[1]!.weight = 9;
    h.write(catalogDoc(v3));
    await waitFor(() => a.client.applied.version === 3, 'v3 applied');
    const last = a.last()!;
    expect(last).toMatchObject({ kind: 'delta', baseVersion: 1, version: 3 });
    // Both the NACKed change and the new one: the agent never applied v2.
    expect(last.upserts.map((s) => s.key).sort()).toEqual(['default/svc-0', 'default/svc-2']);
  });
});

describe('reconnect resync', () => {
  test('a reconnecting agent gets only what changed while it was away', async () => {
    const h = await controller(catalogDoc(services(50)));
    const first = agent(h, 'node-a');
    await waitFor(() => first.client.applied.version === 1, 'snapshot');
    first.stop();
    await waitFor(() => h.server.session('node-a') === undefined, 'session gone');

    const next = services(50);
    next[17]!.backends[0]!.weight = 4;
    h.write(catalogDoc(next.filter((_, i) => i !== 30)));
    await waitFor(() => h.server.store.version === 2, 'v2');

    const again = agent(h, 'node-a', { initial: first.client.applied });
    await waitFor(() => again.client.applied.version === 2, 'resync');
    expect(again.updates).toHaveLength(1);
    expect(again.updates[0]).toMatchObject({
      kind: 'delta',
      baseVersion: 1,
      version: 2,
      deletes: ['default/svc-30'],
    });
    expect(again.updates[0]?.upserts.map((s) => s.key)).toEqual(['default/svc-17']);
    expect(again.keys()).toHaveLength(49);
  });

  test('after a controller restart (new epoch) the agent gets only the services whose content differs', async () => {
    const h = await controller(catalogDoc(services(20)));
    const a = agent(h, 'node-a');
    await waitFor(() => a.client.applied.version === 1, 'snapshot');
    const oldEpoch = a.client.applied.epoch;
    const port = h.port;
    await h.server.stop();

    const next = services(20);
    next[3]!.backends[1]!.weight = 3;
    const h2 = await controller(catalogDoc(next), { listen: `127.0.0.1:${port}` });
    await waitFor(
      () => a.client.applied.epoch === h2.server.store.epoch,
      'resynced with the new controller',
      10_000,
    );
    expect(a.client.applied.epoch).not.toBe(oldEpoch);
    const resync = a.last()!;
    expect(resync.kind).toBe('delta');
    expect(resync.upserts.map((s) => s.key)).toEqual(['default/svc-3']);
    expect(resync.deletes).toEqual([]);
    expect(a.client.connects).toBeGreaterThanOrEqual(2);
  });
});

describe('isolation', () => {
  test('a stuck agent never delays the others; its changes are coalesced and it catches up in one chain', async () => {
    const h = await controller(catalogDoc(services(50)), { maxInFlight: 4 });
    const fast = agent(h, 'node-a');
    // Reads but never ACKs: after 4 unanswered versions the controller holds its changes back.
    const stuck = rawStream(h.target);
    const received: { version: number; base: number }[] = [];
    stuck.call.on('data', (m: ControllerMessage) => {
      if ('snapshot' in m && m.snapshot) received.push({ version: m.snapshot.version, base: 0 });
      if ('delta' in m && m.delta) received.push({ version: m.delta.version, base: m.delta.baseVersion });
    });
    stuck.call.write({
      hello: { node: 'node-stuck', zone: '', epoch: '', version: 0, services: [], agentVersion: '' },
    });
    await waitFor(() => fast.client.applied.version === 1 && received.length === 1, 'both connected');

    for (let round = 2; round <= 30; round++) {
      const next = services(50);
      next[round]!.backends[0]!.weight = 100 + round; // one service per edit, a different one each time
      h.write(catalogDoc(next));
      await waitFor(() => fast.client.applied.version === round, `fast agent at ${round}`);
    }
    expect(fast.updates).toHaveLength(30); // one message per version: never held back
    const stuckSession = h.server.session('node-stuck')!;
    expect(received.map((r) => r.version)).toEqual([1, 2, 3, 4]);
    expect(stuckSession.sentVersion).toBe(4);
    expect(stuckSession.queue.pending?.kind).toBe('delta');
    expect(stuckSession.queue.coalesced).toBe(25);
    expect(await metricValue(h.registry, 'sluice_controller_deltas_coalesced_total')).toBe(25);
    expect(h.server.status().agents.find((x) => x.node === 'node-stuck')).toMatchObject({
      ackedVersion: 0,
      lag: 30,
    });

    // The stuck agent ACKs again: it gets one coalesced delta from 4 to 30 with every service changed since.
    stuck.call.write({ ack: { version: 4 } });
    await waitFor(() => received.at(-1)?.version === 30, 'stuck agent caught up');
    expect(received.at(-1)).toEqual({ version: 30, base: 4 });
    for (let i = 1; i < received.length; i++) expect(received[i]?.base).toBe(received[i - 1]?.version);
  });

  test('a stuck agent whose backlog outgrows its queue gets a snapshot instead', async () => {
    const h = await controller(catalogDoc(services(50)), { maxInFlight: 1, maxQueueServices: 5 });
    const stuck = rawStream(h.target);
    const kinds: string[] = [];
    stuck.call.on('data', (m: ControllerMessage) => {
      if ('snapshot' in m && m.snapshot) kinds.push(`snapshot@${m.snapshot.version}`);
      if ('delta' in m && m.delta) kinds.push(`delta@${m.delta.version}`);
    });
    stuck.call.write({
      hello: { node: 'node-stuck', zone: '', epoch: '', version: 0, services: [], agentVersion: '' },
    });
    await waitFor(() => kinds.length === 1, 'snapshot');
    for (let round = 2; round <= 8; round++) {
      const next = services(50);
      next[round]!.backends[0]!.weight = 100 + round;
      h.write(catalogDoc(next));
      await waitFor(() => h.server.store.version === round, `version ${round}`);
    }
    expect(h.server.session('node-stuck')?.queue.pending).toEqual({ kind: 'snapshot' });
    expect(await metricValue(h.registry, 'sluice_controller_queue_overflows_total')).toBe(1);
    stuck.call.write({ ack: { version: 1 } });
    await waitFor(() => kinds.length === 2, 'resync');
    expect(kinds).toEqual(['snapshot@1', 'snapshot@8']);
  });

  test('a malformed message ends only that stream, with INVALID_ARGUMENT', async () => {
    const h = await controller(catalogDoc(services(2)));
    const good = agent(h, 'node-a');
    await waitFor(() => good.client.applied.version === 1, 'good agent');

    const garbage = rawStream(h.target, () => Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff]));
    garbage.call.write({});
    const s1 = await garbage.status;
    expect(s1.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(s1.details).toMatch(/^undecodable message: /);

    const noHello = rawStream(h.target);
    noHello.call.write({ ack: { version: 1 } });
    expect(await noHello.status).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: 'the first message must be hello, got ack',
    });

    const badNode = rawStream(h.target);
    badNode.call.write({
      hello: { node: 'Bad Node', zone: '', epoch: '', version: 0, services: [], agentVersion: '' },
    });
    expect(await badNode.status).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: "hello.node 'Bad Node' must be a node name (lowercase letters, digits, '-' and '.')",
    });

    const futureAck = rawStream(h.target);
    futureAck.call.write({
      hello: { node: 'node-x', zone: '', epoch: '', version: 0, services: [], agentVersion: '' },
    });
    futureAck.call.write({ ack: { version: 99 } });
    expect(await futureAck.status).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: 'ack for version 99, but the last version sent is 1',
    });

    const twice = rawStream(h.target);
    const hello = {
      hello: { node: 'node-y', zone: '', epoch: '', version: 0, services: [], agentVersion: '' },
    };
    twice.call.write(hello);
    twice.call.write(hello);
    expect(await twice.status).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: 'hello may only be sent once per stream',
    });

    // A second stream from the same node replaces the first.
    const older = rawStream(h.target);
    older.call.on('data', () => {});
    older.call.write({ hello: { ...hello.hello, node: 'node-z' } });
    await waitFor(() => h.server.session('node-z'), 'node-z connected');
    const newer = rawStream(h.target);
    newer.call.on('data', () => {});
    newer.call.write({ hello: { ...hello.hello, node: 'node-z' } });
    expect(await older.status).toMatchObject({
      code: grpc.status.ABORTED,
      details: 'replaced by a newer stream from the same node',
    });
    await waitFor(() => h.server.session('node-z')?.sentVersion === 1, 'the newer stream is served');

    // The good agent is still connected and still gets changes.
    const next = services(2);
    next[0]!.backends[0]!.weight = 5;
    h.write(catalogDoc(next));
    await waitFor(() => good.client.applied.version === 2, 'good agent still served');
    expect(good.client.connects).toBe(1);
    expect(
      await metricValue(h.registry, 'sluice_controller_streams_ended_total', { reason: 'malformed' }),
    ).toBe(1);
  });
});

describe('invalid catalog edits', () => {
  test('an invalid edit keeps the last good catalog, and is visible in metrics and status', async () => {
    const h = await controller(catalogDoc(services(3)));
    const a = agent(h, 'node-a');
    await waitFor(() => a.client.applied.version === 1, 'snapshot');

    const bad = services(3);
    bad[1]!.backends[0]!.weight = 70_000;
    h.write(catalogDoc(bad));
    await waitFor(
      async () => (await metricValue(h.registry, 'sluice_controller_config_invalid')) === 1,
      'invalid',
    );
    await waitFor(() => !h.server.status().configValid, 'status shows invalid');
    expect(h.server.status().configErrors).toEqual([
      'services[1].backends[0].weight: must be an integer from 0 to 65535',
    ]);
    expect(h.server.status().source.errors).toHaveLength(1);
    expect(await metricValue(h.registry, 'sluice_controller_config_errors')).toBe(1);
    expect(h.server.store.version).toBe(1);

    // A newcomer still gets the last good catalog.
    const late = agent(h, 'node-b');
    await waitFor(() => late.client.applied.version === 1, 'late agent');
    expect(late.updates[0]?.upserts[1]?.backends[0]?.weight).toBe(1);
    expect(a.updates).toHaveLength(1);

    // Fixing the file resumes distribution.
    const fixed = services(3);
    fixed[1]!.backends[0]!.weight = 8;
    h.write(catalogDoc(fixed));
    await waitFor(() => a.client.applied.version === 2 && late.client.applied.version === 2, 'fixed');
    expect(await metricValue(h.registry, 'sluice_controller_config_invalid')).toBe(0);
    expect(h.server.status().configValid).toBe(true);
  });
});

describe('standard gRPC tooling', () => {
  test('grpc.health.v1 reports SERVING and reflection lists the services', async () => {
    const h = await controller(catalogDoc(services(1)));
    const Health = grpc.makeClientConstructor(healthService as grpc.ServiceDefinition, 'Health');
    const health = new Health(h.target, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      check(req: object, cb: (err: grpc.ServiceError | null, res: { status: string }) => void): void;
    };
    cleanups.push(() => health.close());
    for (const service of ['', SERVICE_NAME]) {
      const res = await new Promise<{ status: string }>((resolve, reject) =>
        health.check({ service }, (err, r) => (err ? reject(err) : resolve(r))),
      );
      expect(res.status).toBe('SERVING');
    }

    const reflectionProto = join(
      dirname(require.resolve('@grpc/reflection/package.json')),
      'build/proto/grpc/reflection/v1/reflection.proto',
    );
    const pkg = grpc.loadPackageDefinition(
      protoLoader.loadSync(reflectionProto, { keepCase: true }),
    ) as unknown as {
      grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
    };
    const reflection = new pkg.grpc.reflection.v1.ServerReflection(
      h.target,
      grpc.credentials.createInsecure(),
    );
    cleanups.push(() => reflection.close());
    type Listing = { list_services_response: { service: { name: string }[] } };
    const call = (
      reflection as unknown as { ServerReflectionInfo(): grpc.ClientDuplexStream<object, Listing> }
    ).ServerReflectionInfo();
    const response = new Promise<Listing>((resolve) => call.once('data', resolve));
    call.write({ list_services: '*' });
    const names = (await response).list_services_response.service.map((s) => s.name);
    call.end();
    expect(names).toEqual(expect.arrayContaining([SERVICE_NAME, 'grpc.health.v1.Health']));
  });
});

describe('health aggregation', () => {
  const doc = {
    services: [
      {
        name: 'web',
        vip: '10.96.0.10',
        ports: [{ port: 80, targetPort: 8080 }],
        healthCheck: { protocol: 'tcp', interval: '1s', timeout: '500ms' },
        backends: [
          { address: '10.0.1.11', node: 'node-a' },
          { address: '10.0.2.12', node: 'node-b', port: 8081 },
          { address: '192.0.2.7' },
        ],
      },
    ],
  };

  function healthOf(u: CatalogUpdate | undefined, address: string) {
    const b = u?.upserts[0]?.backends.find((x) => x.address === address);
    return b ? `${b.health}${b.healthReason ? ` (${b.healthReason})` : ''}` : undefined;
  }

  test('owners probe, reports merge into the pushed catalog, non-owners are ignored, owners expire after a grace period', async () => {
    const h = await controller(doc, { healthGraceMs: 300 });
    const a = agent(h, 'node-a');
    const b = agent(h, 'node-b');
    const c = agent(h, 'node-c');
    const all = [a, b, c];
    await waitFor(() => all.every((x) => x.client.applied.version === 1), 'all synced');

    // Probe assignment: node backends to their node; the external one to exactly two agents.
    await waitFor(() => all.every((x) => x.probes.length > 0), 'assignments');
    const latest = (x: TestAgent) => (x.probes.at(-1) ?? []).map((p) => `${p.address}:${p.port ?? 0}`);
    await waitFor(
      () => all.filter((x) => latest(x).includes('192.0.2.7:0')).length === 2,
      'external to two agents',
    );
    expect(latest(a)).toContain('10.0.1.11:0');
    expect(latest(b)).toContain('10.0.2.12:8081');
    expect(latest(c)).not.toContain('10.0.1.11:0');

    // The owner's report is merged and pushed to every agent.
    a.client.reportHealth([
      {
        service: 'default/web',
        address: '10.0.1.11',
        port: null,
        state: 'unhealthy',
        reason: 'connect ECONNREFUSED',
      },
    ]);
    await waitFor(() => all.every((x) => healthOf(x.last(), '10.0.1.11')?.startsWith('unhealthy')), 'pushed');
    expect(healthOf(c.last(), '10.0.1.11')).toBe('unhealthy (node-a: connect ECONNREFUSED)');

    // A non-owner's report changes nothing.
    const version = h.server.store.version;
    c.client.reportHealth([
      { service: 'default/web', address: '10.0.1.11', port: null, state: 'healthy', reason: '' },
    ]);
    await waitFor(
      async () =>
        (await metricValue(h.registry, 'sluice_controller_health_results_total', { result: 'ignored' })) ===
        1,
      'ignored',
    );
    expect(h.server.store.version).toBe(version);

    // External backend: healthy if any owner says so.
    const owners = all.filter((x) => latest(x).includes('192.0.2.7:0'));
    owners[0]!.client.reportHealth([
      { service: 'default/web', address: '192.0.2.7', port: null, state: 'unhealthy', reason: 'timeout' },
    ]);
    owners[1]!.client.reportHealth([
      { service: 'default/web', address: '192.0.2.7', port: null, state: 'healthy', reason: '' },
    ]);
    await waitFor(() => healthOf(a.last(), '192.0.2.7') === 'healthy', 'external healthy');

    // node-a leaves: its backend keeps its last health for the grace period, then becomes unknown.
    a.stop();
    await waitFor(() => h.server.session('node-a') === undefined, 'node-a gone');
    expect(h.server.health.health('default/web', { address: '10.0.1.11', port: null }).state).toBe(
      'unhealthy',
    );
    await waitFor(() => healthOf(b.last(), '10.0.1.11') === 'unknown', 'unknown after grace', 3000);
  });

  test('an external backend moves to another agent when an owner leaves', async () => {
    const h = await controller(doc, { healthGraceMs: 60_000 });
    const agents = ['node-a', 'node-b', 'node-c', 'node-d'].map((n) => agent(h, n));
    await waitFor(() => agents.every((x) => x.client.applied.version === 1), 'all synced');
    const owns = (x: TestAgent) => (x.probes.at(-1) ?? []).some((p) => p.address === '192.0.2.7');
    await waitFor(() => agents.filter(owns).length === 2, 'two owners');
    const [gone, stays] = agents.filter(owns);
    gone!.stop();
    await waitFor(() => agents.filter((x) => x !== gone && owns(x)).length === 2, 'reassigned');
    expect(owns(stays!)).toBe(true);
  });
});
