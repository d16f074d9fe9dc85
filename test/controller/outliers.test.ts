/**
 * Passive (outlier) ejections reported by agents (HealthReport.outliers), over real gRPC streams:
 * recorded per node in a metric and /status, never merged into a backend's health or pushed to agents;
 * ended, disconnected and unknown backends leave no series; a malformed report ends only that stream with
 * INVALID_ARGUMENT naming the field; an older controller (HealthReport without the field) still decodes the
 * message as a health report.
 */
import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { afterEach, describe, expect, test } from 'vitest';
import type { OutlierEjection } from '../../controller/agent-client';
import { validateOutlier } from '../../controller/outliers';
import {
  type AgentMessage,
  type ControllerMessage,
  loadPackageDefinition,
  SERVICE_NAME,
  type WireOutlierEjection,
} from '../../controller/protocol';
import { catalogDoc, type Harness, metricValue, startController, TestAgent, waitFor } from './helpers';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

const CATALOG = catalogDoc([
  {
    name: 'web',
    vip: '10.96.0.10',
    backends: [
      { address: '10.0.1.11', node: 'node-a' },
      { address: '10.0.2.12', port: 9090, node: 'node-b' },
    ],
  },
]);

function ejection(overrides: Partial<WireOutlierEjection> = {}): OutlierEjection {
  return {
    service: 'default/web',
    address: '10.0.1.11',
    port: 8080,
    vip: '10.96.0.10',
    vipPort: 80,
    protocol: 'TCP',
    ejected: true,
    ejectedForMs: 5000,
    consecutiveFailures: 3,
    consecutiveEjections: 1,
    ejections: 1,
    reason: '3 consecutive failed connects (ejection 1 in a row)',
    ...overrides,
  };
}

async function controller(): Promise<Harness> {
  const h = await startController(CATALOG);
  cleanups.push(() => h.stop());
  return h;
}

function agent(h: Harness, node: string): TestAgent {
  const a = new TestAgent(h.target, node).start();
  cleanups.push(() => a.stop());
  return a;
}

const GAUGE = 'sluice_controller_outlier_ejections';
const REPORTS = 'sluice_controller_outlier_reports_total';

describe('validateOutlier', () => {
  test.each([
    [{ service: 'web' }, "health.outliers[0].service: 'web' is not a namespace/name key"],
    [{ address: 'nope' }, "health.outliers[0].address: 'nope' is not an IP address"],
    [{ port: 0 }, 'health.outliers[0].port: must be an integer from 1 to 65535'],
    [{ port: 70000 }, 'health.outliers[0].port: must be an integer from 1 to 65535'],
    [{ vip: '' }, "health.outliers[0].vip: '' is not an IP address"],
    [{ vipPort: 0 }, 'health.outliers[0].vipPort: must be an integer from 1 to 65535'],
    [{ protocol: 'SCTP' }, 'health.outliers[0].protocol: must be TCP or UDP'],
    [{ reason: '' }, 'health.outliers[0].reason: required when ejected is true'],
    [{ reason: 'x'.repeat(513) }, 'health.outliers[0].reason: longer than 512 characters'],
  ])('%j is rejected', (bad, message) => {
    expect(validateOutlier({ ...ejection(), ...bad }, 0)).toBe(message);
  });

  test('a well-formed start, and an end without a reason, are accepted', () => {
    expect(validateOutlier(ejection(), 3)).toBeNull();
    expect(validateOutlier(ejection({ ejected: false, reason: '', ejectedForMs: 0 }), 3)).toBeNull();
    expect(validateOutlier(ejection({ address: 'fd00::1', vip: 'fd00::10' }), 0)).toBeNull();
  });
});

describe('outlier reports over the Sync stream', () => {
  test('recorded per node in the metric and status with the reason; health and versions untouched', async () => {
    const h = await controller();
    const a = agent(h, 'node-a');
    const b = agent(h, 'node-b');
    await waitFor(() => a.client.applied.version === 1 && b.client.applied.version === 1, 'both synced');
    const version = h.server.store.version;

    a.client.reportOutliers([ejection()]);
    await waitFor(() => h.server.status().outlierEjections.length === 1, 'ejection recorded');
    const labels = { node: 'node-a', service: 'default/web', backend: '10.0.1.11:8080' };
    expect(await metricValue(h.registry, GAUGE, labels)).toBe(1);
    expect(await metricValue(h.registry, REPORTS, { result: 'ejected' })).toBe(1);
    const [status] = h.server.status().outlierEjections;
    expect(status).toMatchObject({
      node: 'node-a',
      service: 'default/web',
      backend: '10.0.1.11:8080',
      frontend: '10.96.0.10:80/TCP',
      consecutiveFailures: 3,
      consecutiveEjections: 1,
      ejections: 1,
      reason: '3 consecutive failed connects (ejection 1 in a row)',
    });
    const until = Date.parse(status!.ejectedUntil) - Date.parse(status!.reportedAt);
    expect(until).toBe(5000);

    // A per-node view: nothing is pushed, and the backend's merged health is what it was.
    await new Promise((r) => setTimeout(r, 100));
    expect(h.server.store.version).toBe(version);
    expect(b.updates).toHaveLength(1);
    const web = h.server.store.snapshotMessage();
    const pushed = 'snapshot' in web ? web.snapshot.services[0]?.backends[0] : undefined;
    expect(pushed).toMatchObject({ address: '10.0.1.11', health: 'HEALTH_UNKNOWN' });

    // A second node ejecting another backend is its own series.
    b.client.reportOutliers([ejection({ address: '10.0.2.12', port: 9090, reason: 'threshold' })]);
    await waitFor(() => h.server.status().outlierEjections.length === 2, 'second node recorded');
    expect(
      await metricValue(h.registry, GAUGE, {
        node: 'node-b',
        service: 'default/web',
        backend: '10.0.2.12:9090',
      }),
    ).toBe(1);

    // Ended: the series goes away.
    a.client.reportOutliers([ejection({ ejected: false, ejectedForMs: 0, reason: '' })]);
    await waitFor(() => h.server.status().outlierEjections.length === 1, 'ejection ended');
    expect(await metricValue(h.registry, GAUGE, labels)).toBeUndefined();
    expect(await metricValue(h.registry, REPORTS, { result: 'ended' })).toBe(1);

    // Unknown backends (not in the catalog, or a port it does not serve on) are ignored.
    a.client.reportOutliers([ejection({ address: '10.9.9.9' }), ejection({ port: 9999 })]);
    const deadline = Date.now() + 5000;
    while ((await metricValue(h.registry, REPORTS, { result: 'ignored' })) !== 2) {
      if (Date.now() > deadline) throw new Error('timed out waiting for the ignored reports');
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(h.server.status().outlierEjections.map((e) => e.node)).toEqual(['node-b']);

    // The node's view goes with its stream.
    b.stop();
    await waitFor(() => h.server.status().outlierEjections.length === 0, 'disconnect clears');
    expect(
      await metricValue(h.registry, GAUGE, {
        node: 'node-b',
        service: 'default/web',
        backend: '10.0.2.12:9090',
      }),
    ).toBeUndefined();
  });

  test('an ejection still in force is re-sent after a reconnect, with the time left', async () => {
    const h = await controller();
    const a = agent(h, 'node-a');
    await waitFor(() => a.client.applied.version === 1, 'synced');
    a.client.reportOutliers([ejection({ ejectedForMs: 60_000 })]);
    await waitFor(() => h.server.status().outlierEjections.length === 1, 'recorded');
    // The controller ends the stream (a newer stream from the same node replaces it): the client reconnects.
    const replaced = h.server.session('node-a');
    replaced?.call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'test: stream dropped' });
    await waitFor(() => a.client.connects >= 2 && h.server.session('node-a') !== replaced, 'reconnected');
    await waitFor(() => h.server.status().outlierEjections.length === 1, 're-sent');
    const [status] = h.server.status().outlierEjections;
    const left = Date.parse(status!.ejectedUntil) - Date.parse(status!.reportedAt);
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThanOrEqual(60_000);
  });

  test('a malformed report ends only that stream, with INVALID_ARGUMENT naming the field', async () => {
    const h = await controller();
    const good = agent(h, 'node-a');
    await waitFor(() => good.client.applied.version === 1, 'good agent');

    const def = loadPackageDefinition()[SERVICE_NAME] as protoLoader.ServiceDefinition;
    const sync = def.Sync as unknown as grpc.MethodDefinition<AgentMessage, ControllerMessage>;
    const client = new grpc.Client(h.target, grpc.credentials.createInsecure());
    const call = client.makeBidiStreamRequest(sync.path, sync.requestSerialize, sync.responseDeserialize);
    cleanups.push(() => {
      call.cancel();
      client.close();
    });
    call.on('error', () => {});
    const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    call.write({
      hello: { node: 'node-b', zone: '', epoch: '', version: 0, services: [], agentVersion: '' },
    });
    call.write({ health: { results: [], outliers: [ejection(), ejection({ port: 0 })] } });
    expect(await status).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: 'health.outliers[1].port: must be an integer from 1 to 65535',
    });
    // Nothing of the rejected message was recorded, and the other agent's stream is untouched.
    expect(h.server.status().outlierEjections).toEqual([]);
    expect(
      await metricValue(h.registry, 'sluice_controller_streams_ended_total', { reason: 'protocol' }),
    ).toBe(1);
    good.client.reportOutliers([ejection()]);
    await waitFor(() => h.server.status().outlierEjections.length === 1, 'good agent still reports');
    expect(h.server.session('node-a')).toBeDefined();
  });
});

describe('compatibility', () => {
  test('an older controller (HealthReport without outliers) decodes the message as a health report', () => {
    const older = protobuf
      .parse(`
      syntax = "proto3";
      package sluice.v1;
      message AgentMessage { oneof kind { HealthReport health = 4; } }
      message HealthReport { repeated BackendHealthResult results = 1; }
      message BackendHealthResult { string service = 1; string address = 2; uint32 port = 3; }
    `)
      .root.lookupType('sluice.v1.AgentMessage');
    const def = loadPackageDefinition()[SERVICE_NAME] as protoLoader.ServiceDefinition;
    const sync = def.Sync as unknown as grpc.MethodDefinition<AgentMessage, ControllerMessage>;
    const bytes = sync.requestSerialize({ health: { results: [], outliers: [ejection()] } });
    const decoded = older.toObject(older.decode(bytes), { oneofs: true, arrays: true }) as {
      kind?: string;
      health?: { results: unknown[] };
    };
    expect(decoded.kind).toBe('health');
    expect(decoded.health?.results).toEqual([]);
  });
});
