import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { AgentMetrics, backendLabel } from '../../agent/metrics';

function lines(text: string, prefix: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(prefix));
}

describe('AgentMetrics', () => {
  it('registers only on the injected registry, with process metrics', async () => {
    const registry = new Registry();
    new AgentMetrics(registry);
    const text = await registry.metrics();
    expect(text).toContain('# TYPE sluice_backend_connects_total counter');
    expect(text).toContain('# TYPE sluice_health_probe_duration_seconds histogram');
    expect(text).toMatch(/^process_cpu_user_seconds_total \d/m);
    expect(text).toMatch(/^nodejs_heap_size_total_bytes \d/m);
    const names = registry.getMetricsAsArray().map((m) => m.name);
    for (const n of names) expect(n).toMatch(/^(sluice_|process_|nodejs_)/);
    // A second instance on its own registry does not clash (nothing is on the global one).
    const other = new Registry();
    expect(() => new AgentMetrics(other, { processMetrics: false })).not.toThrow();
    expect((await other.metrics()).includes('process_cpu')).toBe(false);
  });

  it('turns cumulative kernel readings into counter increments', async () => {
    const registry = new Registry();
    const m = new AgentMetrics(registry, { processMetrics: false });
    const labels = '{service="default/web",backend="10.0.1.11:8080"}';
    m.observeBackendCounters('default/web', '10.0.1.11:8080', {
      connects: 10,
      connectFailures: 1,
      activeConnections: 4,
      ejections: 0,
    });
    m.observeBackendCounters('default/web', '10.0.1.11:8080', {
      connects: 25,
      connectFailures: 3,
      activeConnections: 2,
      ejections: 1,
    });
    let text = await registry.metrics();
    expect(text).toContain(`sluice_backend_connects_total${labels} 25`);
    expect(text).toContain(`sluice_backend_connect_failures_total${labels} 3`);
    expect(text).toContain(`sluice_backend_active_connections${labels} 2`);
    expect(text).toContain(`sluice_backend_ejections_total${labels} 1`);
    // The map was recreated: the reading restarts from zero and is added, never subtracted.
    m.observeBackendCounters('default/web', '10.0.1.11:8080', {
      connects: 5,
      connectFailures: 0,
      activeConnections: 0,
      ejections: 0,
    });
    text = await registry.metrics();
    expect(text).toContain(`sluice_backend_connects_total${labels} 30`);
    expect(text).toContain(`sluice_backend_connect_failures_total${labels} 3`);
  });

  it('keeps exactly one health series per backend', async () => {
    const registry = new Registry();
    const m = new AgentMetrics(registry, { processMetrics: false });
    m.setBackendHealth('default/web', '10.0.1.11:8080', 'unknown', 'not probed yet');
    m.setBackendHealth('default/web', '10.0.1.11:8080', 'healthy', 'http 200');
    m.setBackendHealth('default/web', '10.0.1.11:8080', 'unhealthy', 'http 503');
    m.setBackendHealth('default/web', '10.0.1.12:8080', 'healthy', 'connected');
    const health = lines(await registry.metrics(), 'sluice_backend_health{');
    expect(health).toEqual([
      'sluice_backend_health{service="default/web",backend="10.0.1.11:8080",state="unhealthy",reason="http 503"} 1',
      'sluice_backend_health{service="default/web",backend="10.0.1.12:8080",state="healthy",reason="connected"} 1',
    ]);
  });

  it('records probes, map usage, sync durations, controller state and applied version', async () => {
    const registry = new Registry();
    const m = new AgentMetrics(registry, { processMetrics: false });
    m.observeProbe('default/web', '10.0.1.11:8080', 'http', 0.003, true);
    m.observeProbe('default/web', '10.0.1.11:8080', 'http', 0.5, false);
    m.setMapUsage('sluice_services_v1', 12, 65536);
    m.observeSync('delta', 0.0004);
    m.setControllerState('connected');
    m.catalogApplied(42n, 'ack');
    m.catalogApplied(43, 'nack');
    const text = await registry.metrics();
    expect(text).toContain(
      'sluice_health_probe_duration_seconds_bucket{le="0.005",service="default/web",protocol="http"} 1',
    );
    expect(text).toContain(
      'sluice_health_probe_duration_seconds_count{service="default/web",protocol="http"} 2',
    );
    expect(text).toContain(
      'sluice_health_probe_failures_total{service="default/web",backend="10.0.1.11:8080",protocol="http"} 1',
    );
    expect(text).toContain('sluice_map_entries{map="sluice_services_v1"} 12');
    expect(text).toContain('sluice_map_capacity{map="sluice_services_v1"} 65536');
    expect(text).toContain('sluice_datapath_sync_duration_seconds_bucket{le="0.0005",kind="delta"} 1');
    expect(lines(text, 'sluice_controller_connection_state{')).toEqual([
      'sluice_controller_connection_state{state="connecting"} 0',
      'sluice_controller_connection_state{state="connected"} 1',
      'sluice_controller_connection_state{state="disconnected"} 0',
      'sluice_controller_connection_state{state="standalone"} 0',
    ]);
    expect(text).toContain('sluice_catalog_applied_version 42');
    expect(text).toContain('sluice_catalog_updates_total{result="nack"} 1');
  });

  it('deletes the series of removed backends and services', async () => {
    const registry = new Registry();
    const m = new AgentMetrics(registry, { processMetrics: false });
    const counters = { connects: 1, connectFailures: 1, activeConnections: 1, ejections: 1 };
    for (const backend of ['10.0.1.11:8080', '10.0.1.12:8080']) {
      m.observeBackendCounters('default/web', backend, counters);
      m.setBackendHealth('default/web', backend, 'unhealthy', 'connect ECONNREFUSED');
      m.observeProbe('default/web', backend, 'tcp', 0.001, false);
    }
    m.observeBackendCounters('default/api', '10.0.2.1:9000', counters);
    m.observeProbe('default/api', '10.0.2.1:9000', 'grpc', 0.001, true);

    m.removeBackend('default/web', '10.0.1.11:8080');
    m.removeBackend('default/web', '10.0.1.11:8080'); // idempotent
    let text = await registry.metrics();
    expect(text).not.toContain('10.0.1.11');
    expect(lines(text, 'sluice_backend_').filter((l) => l.includes('10.0.1.12')).length).toBe(5);

    // A removed backend that comes back starts from its new kernel reading, not a stale delta.
    m.observeBackendCounters('default/web', '10.0.1.11:8080', { ...counters, connects: 7 });
    text = await registry.metrics();
    expect(text).toContain('sluice_backend_connects_total{service="default/web",backend="10.0.1.11:8080"} 7');

    m.removeService('default/web');
    text = await registry.metrics();
    expect(text).not.toContain('default/web');
    expect(text).toContain('default/api');
    m.removeService('default/api');
    expect(await registry.metrics()).not.toMatch(/service="/);
  });

  it('formats backend labels for both families', () => {
    expect(backendLabel('10.0.1.11', 80)).toBe('10.0.1.11:80');
    expect(backendLabel('fd00::1', 80)).toBe('[fd00::1]:80');
  });
});
