/**
 * The agent reports the kernel's passive ejections to the controller: a NodeAgent following a real
 * controller over real gRPC (connectController), with a sink whose read-back kernel state the test sets
 * (the state the BPF maps would hold after failed connects), polled by the agent's own pollKernel():
 * an ejection start reaches the controller with its reason, its end clears it, and an ejection that
 * started and ended between two reads is counted but not kept as current.
 */
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { connectController, outlierReports } from '../../agent/controller-link';
import { MemorySink } from '../../agent/datapath-sink';
import { defaultProbers } from '../../agent/health/probers';
import { HealthScheduler } from '../../agent/health/scheduler';
import { AgentMetrics } from '../../agent/metrics';
import { type KernelBackendStatus, NodeAgent } from '../../agent/node-agent';
import { catalogDoc, type Harness, metricValue, startController, waitFor } from '../controller/helpers';

const log = pino({ level: 'silent' });

/** The in-memory sink, with the per-backend kernel state the test sets. */
class KernelStateSink extends MemorySink {
  status: KernelBackendStatus[] = [];
  override readStatus(): readonly KernelBackendStatus[] {
    return this.status;
  }
}

function kernel(overrides: Partial<KernelBackendStatus> = {}): KernelBackendStatus {
  return {
    vip: '10.96.0.10',
    port: 80,
    protocol: 'TCP',
    address: '10.0.1.11',
    backendPort: 8080,
    ejected: false,
    ejectedForMs: 0,
    consecutiveFailures: 0,
    consecutiveEjections: 0,
    ejections: 0,
    connects: 10,
    connectFailures: 0,
    activeConnections: 0,
    ...overrides,
  };
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

describe('outlierReports', () => {
  it('maps a kernel state to a start, an end, or both when it already ended', () => {
    const on = kernel({
      ejected: true,
      ejectedForMs: 4000,
      consecutiveFailures: 3,
      consecutiveEjections: 1,
      ejections: 1,
    });
    expect(outlierReports('default/web', on, 'why')).toEqual([
      {
        service: 'default/web',
        address: '10.0.1.11',
        port: 8080,
        vip: '10.96.0.10',
        vipPort: 80,
        protocol: 'TCP',
        ejected: true,
        ejectedForMs: 4000,
        consecutiveFailures: 3,
        consecutiveEjections: 1,
        ejections: 1,
        reason: 'why',
      },
    ]);
    expect(outlierReports('default/web', kernel({ ejections: 1 }), null)).toMatchObject([
      { ejected: false, ejectedForMs: 0, reason: '' },
    ]);
    expect(outlierReports('default/web', kernel({ ejections: 2 }), 'why')).toMatchObject([
      { ejected: true, reason: 'why' },
      { ejected: false, reason: '' },
    ]);
  });
});

describe('a kernel ejection observed by the agent', () => {
  it('is reported to the controller with its reason, and its end clears it there', async () => {
    const h: Harness = await startController(
      catalogDoc([
        {
          name: 'web',
          vip: '10.96.0.10',
          backends: [
            { address: '10.0.1.11', node: 'node-a' },
            { address: '10.0.2.12', node: 'node-b' },
          ],
        },
      ]),
    );
    cleanups.push(() => h.stop());
    const sink = new KernelStateSink();
    const scheduler = new HealthScheduler({ probers: defaultProbers(), logger: log });
    const metrics = new AgentMetrics(new Registry(), { processMetrics: false });
    const agent = new NodeAgent({ node: 'node-a', sink, health: scheduler, log, metrics });
    cleanups.push(() => agent.stop());
    const link = connectController({
      controller: { host: '127.0.0.1', port: h.port },
      node: 'node-a',
      agent,
      metrics,
      log,
      backoff: { initialMs: 50, maxMs: 200 },
    });
    cleanups.push(() => link.stop());
    await waitFor(() => h.server.session('node-a')?.ackedVersion === 1, 'catalog applied and ACKed');

    sink.status = [kernel(), kernel({ address: '10.0.2.12' })];
    agent.pollKernel();
    await new Promise((r) => setTimeout(r, 100));
    expect(h.server.status().outlierEjections).toEqual([]);

    // The kernel ejects 10.0.2.12 after three failed connects from this node.
    sink.status = [
      kernel(),
      kernel({
        address: '10.0.2.12',
        ejected: true,
        ejectedForMs: 5000,
        consecutiveFailures: 3,
        consecutiveEjections: 1,
        ejections: 1,
      }),
    ];
    agent.pollKernel();
    await waitFor(() => h.server.status().outlierEjections.length === 1, 'ejection reported');
    expect(h.server.status().outlierEjections[0]).toMatchObject({
      node: 'node-a',
      service: 'default/web',
      backend: '10.0.2.12:8080',
      frontend: '10.96.0.10:80/TCP',
      consecutiveFailures: 3,
      ejections: 1,
      reason: '3 consecutive failed connects (ejection 1 in a row)',
    });
    const labels = { node: 'node-a', service: 'default/web', backend: '10.0.2.12:8080' };
    expect(await metricValue(h.registry, 'sluice_controller_outlier_ejections', labels)).toBe(1);

    // Polling again without a change sends nothing new.
    agent.pollKernel();
    await new Promise((r) => setTimeout(r, 100));
    expect(
      await metricValue(h.registry, 'sluice_controller_outlier_reports_total', { result: 'ejected' }),
    ).toBe(1);

    // The ejection time passes.
    sink.status = [kernel(), kernel({ address: '10.0.2.12', ejections: 1, consecutiveEjections: 1 })];
    agent.pollKernel();
    await waitFor(() => h.server.status().outlierEjections.length === 0, 'ejection end reported');
    expect(await metricValue(h.registry, 'sluice_controller_outlier_ejections', labels)).toBeUndefined();

    // Ejected and back between two reads: counted, not kept.
    sink.status = [
      kernel({ ejections: 1, consecutiveFailures: 3, consecutiveEjections: 1 }),
      sink.status[1]!,
    ];
    agent.pollKernel();
    const deadline = Date.now() + 5000;
    while (
      (await metricValue(h.registry, 'sluice_controller_outlier_reports_total', { result: 'ended' })) !== 2
    ) {
      if (Date.now() > deadline) throw new Error('timed out waiting for the short ejection');
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(
      await metricValue(h.registry, 'sluice_controller_outlier_reports_total', { result: 'ejected' }),
    ).toBe(2);
    expect(h.server.status().outlierEjections).toEqual([]);
  });
});
