import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** The controller's Prometheus metrics, registered on an injected registry (never the global one). */
export class ControllerMetrics {
  readonly connectedAgents: Gauge;
  readonly catalogVersion: Gauge;
  readonly catalogServices: Gauge;
  readonly catalogBackends: Gauge;
  readonly agentVersionLag: Gauge<'node'>;
  readonly pushAckSeconds: Histogram;
  readonly acks: Counter;
  readonly nacks: Counter<'node'>;
  readonly configInvalid: Gauge;
  readonly configErrors: Gauge;
  readonly configLoads: Counter<'result'>;
  readonly streamsEnded: Counter<'reason'>;
  readonly snapshotsSent: Counter;
  readonly deltasSent: Counter;
  readonly deltasCoalesced: Counter;
  readonly queueOverflows: Counter;
  readonly healthReports: Counter<'result'>;
  readonly outlierEjections: Gauge<'node' | 'service' | 'backend'>;
  readonly outlierReports: Counter<'result'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.connectedAgents = new Gauge({
      name: 'sluice_controller_connected_agents',
      help: 'Agents with an open Sync stream',
      registers,
    });
    this.catalogVersion = new Gauge({
      name: 'sluice_controller_catalog_version',
      help: 'Current catalog version',
      registers,
    });
    this.catalogServices = new Gauge({
      name: 'sluice_controller_catalog_services',
      help: 'Services in the catalog',
      registers,
    });
    this.catalogBackends = new Gauge({
      name: 'sluice_controller_catalog_backends',
      help: 'Backends in the catalog',
      registers,
    });
    this.agentVersionLag = new Gauge({
      name: 'sluice_controller_agent_version_lag',
      help: 'Catalog version minus the version the agent last acknowledged',
      labelNames: ['node'],
      registers,
    });
    this.pushAckSeconds = new Histogram({
      name: 'sluice_controller_push_ack_seconds',
      help: 'Time from a catalog version being created to an agent acknowledging it',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.acks = new Counter({
      name: 'sluice_controller_acks_total',
      help: 'Versions acknowledged by agents',
      registers,
    });
    this.nacks = new Counter({
      name: 'sluice_controller_nacks_total',
      help: 'Versions rejected by agents',
      labelNames: ['node'],
      registers,
    });
    this.configInvalid = new Gauge({
      name: 'sluice_controller_config_invalid',
      help: '1 while the newest catalog source content is invalid (the last good catalog is still served)',
      registers,
    });
    this.configErrors = new Gauge({
      name: 'sluice_controller_config_errors',
      help: 'Validation errors in the newest catalog source content',
      registers,
    });
    this.configLoads = new Counter({
      name: 'sluice_controller_config_loads_total',
      help: 'Catalog loads by result (ok, invalid)',
      labelNames: ['result'],
      registers,
    });
    this.streamsEnded = new Counter({
      name: 'sluice_controller_streams_ended_total',
      help: 'Agent streams ended, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.snapshotsSent = new Counter({
      name: 'sluice_controller_snapshots_sent_total',
      help: 'Full snapshots sent',
      registers,
    });
    this.deltasSent = new Counter({
      name: 'sluice_controller_deltas_sent_total',
      help: 'Deltas sent',
      registers,
    });
    this.deltasCoalesced = new Counter({
      name: 'sluice_controller_deltas_coalesced_total',
      help: 'Deltas merged into a pending one for a slow agent',
      registers,
    });
    this.queueOverflows = new Counter({
      name: 'sluice_controller_queue_overflows_total',
      help: 'Agent queues that overflowed into a full snapshot',
      registers,
    });
    this.healthReports = new Counter({
      name: 'sluice_controller_health_results_total',
      help: 'Backend health results from agents (accepted, ignored: not an owner)',
      labelNames: ['result'],
      registers,
    });
    this.outlierEjections = new Gauge({
      name: 'sluice_controller_outlier_ejections',
      help: "Service ports on which the node's kernel currently ejects the backend (passive outlier detection; a per-node view, not the backend's health)",
      labelNames: ['node', 'service', 'backend'],
      registers,
    });
    this.outlierReports = new Counter({
      name: 'sluice_controller_outlier_reports_total',
      help: 'Passive ejection reports from agents (ejected, ended, ignored: not a backend of the catalog)',
      labelNames: ['result'],
      registers,
    });
  }
}
