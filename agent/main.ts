/**
 * sluice-agent: the per-node daemon. Builds the one root logger and the one metrics registry, loads and
 * attaches (or adopts) the data plane, and runs the sync loop in standalone or controller mode.
 *
 *   sluice-agent --config services.yaml [--cgroup PATH] [--bpffs DIR] ...     standalone, one node
 *   sluice-agent --controller HOST:PORT --node NAME [--zone ZONE] ...          follow a controller
 *                [--tls-cert FILE --tls-key FILE --tls-ca FILE | --insecure] [--state-dir DIR]
 *   either mode: [--fastpath off|mesh|all]  same-node fast path (default off, agent/fastpath-wiring.ts)
 *                [--xdp-interface IFNAME ...]  XDP load balancer for external IPs (agent/xdp-wiring.ts)
 *   sluice-agent uninstall [--cgroup PATH] [--bpffs DIR]                       remove what it attached
 *
 * SIGTERM / SIGINT stop the agent and leave the data plane pinned and working; only `uninstall` detaches.
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import pino, { type Logger } from 'pino';
import { Registry } from 'prom-client';
import { packageRoot } from '../native';
import type { BpfObject, NativeBpf } from '../native/types';
import { loadState, type PersistedCatalog } from './catalog-state';
import { type AgentConfig, ConfigError, loadAgentConfig, type RunConfig, type TlsFiles } from './config';
import { connectController } from './controller-link';
import { migrateRetiredLbMaps } from './datapath/migrate';
import { lbMapMaxEntries, resolveLbSettings } from './datapath/settings';
import { createSocketLbSink } from './datapath-bpf';
import { afterEachPlan, MemorySink } from './datapath-sink';
import { DnsServer } from './dns/server';
import { buildDnsIndex } from './dns/zone';
import { AgentFastPath, FASTPATH_OBJECT_PATH } from './fastpath-wiring';
import { defaultProbers } from './health/probers';
import { HealthScheduler } from './health/scheduler';
import { AgentMetrics } from './metrics';
import { loadNative } from './native-loader';
import { type DataplaneSink, NodeAgent, type ProgrammedService } from './node-agent';
import { type Installed, install, pinLayout, uninstall } from './pins';
import { startStandalone } from './standalone';
import { AgentXdp, removeXdpLinks, XDP_OBJECT_DIR } from './xdp-wiring';

/** The compiled objects the agent loads, relative to the package root. */
export const SOCKET_LB_OBJECTS = ['build/bpf/sock_lb.bpf.o', 'build/bpf/sockops.bpf.o'];
/** Loaded apart: it needs bpf_sock_destroy (kernel 6.5+) and the agent runs without it. */
export const REAPER_OBJECT = 'build/bpf/sock_reaper.bpf.o';

export function makeLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  const pretty = destination === undefined && process.stdout.isTTY === true;
  if (pretty) {
    return pino(
      { level, base: { pid: process.pid } },
      pino.transport({ target: 'pino-pretty', options: { colorize: true } }),
    );
  }
  return pino({ level, base: { pid: process.pid } }, destination ?? pino.destination({ fd: 1, sync: false }));
}

/** What main() builds that tests or other entry points may replace. */
export interface AgentDeps {
  readonly bpf?: () => NativeBpf;
  /** The datapath: by default the BPF objects under `bpffs`; `memory` runs without BPF. */
  readonly datapath?: 'bpf' | 'memory';
  readonly logDestination?: NodeJS.WritableStream;
  /** Called once the agent runs; resolves the returned promise's stop function for tests. */
  readonly onReady?: (running: RunningAgent) => void;
  /** Controller reconnect back-off (tests shorten it). */
  readonly backoff?: { initialMs?: number; maxMs?: number };
  /** How long a restarted agent waits for the controller before using its persisted catalog. */
  readonly restoreAfterMs?: number;
}

/** mTLS client credentials from the three PEM files; an unreadable file is a ConfigError naming its flag. */
export function tlsCredentials(files: TlsFiles): grpc.ChannelCredentials {
  const read = (flag: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (error) {
      throw new ConfigError(flag, `cannot read ${path}: ${(error as Error).message}`);
    }
  };
  const ca = read('--tls-ca', files.ca);
  const key = read('--tls-key', files.key);
  const cert = read('--tls-cert', files.cert);
  try {
    return grpc.credentials.createSsl(ca, key, cert);
  } catch (error) {
    throw new ConfigError('--tls-cert', `unusable certificate or key: ${(error as Error).message}`);
  }
}

export interface RunningAgent {
  readonly agent: NodeAgent;
  readonly sink: DataplaneSink;
  /** The same-node fast path (absent without BPF); its `mode` is 'off' also when the kernel refused it. */
  readonly fastPath: AgentFastPath | undefined;
  /** The XDP load balancer, with --xdp-interface (its `mode` is undefined when the attach failed). */
  readonly xdp: AgentXdp | undefined;
  /** Bound DNS port, when the responder runs. */
  readonly dnsPort: number | undefined;
  readonly registry: Registry;
  readonly metricsAddress: string | undefined;
  stop(): Promise<void>;
}

function serveMetrics(registry: Registry, host: string, port: number, log: Logger): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end('see /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: Error) => res.writeHead(500).end(`${err.message}\n`),
    );
  });
  return new Promise((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const address = server.address();
      log.info({ address }, 'metrics listening');
      resolvePromise(server);
    });
  });
}

export async function runAgent(config: RunConfig, deps: AgentDeps = {}): Promise<RunningAgent> {
  const root = makeLogger(config.logLevel, deps.logDestination);
  const log = root.child({ component: 'agent' });
  // Read before anything is attached: a bad file stops the agent with the flag at fault.
  const credentials = config.mode === 'controller' && config.tls ? tlsCredentials(config.tls) : undefined;
  const registry = new Registry();
  const metrics = new AgentMetrics(registry);
  metrics.setControllerState(config.mode === 'standalone' ? 'standalone' : 'connecting');

  let installed: Installed | undefined;
  let sink: DataplaneSink;
  let closeSink = () => {};
  let fastPath: AgentFastPath | undefined;
  let xdp: AgentXdp | undefined;
  if ((deps.datapath ?? 'bpf') === 'memory') {
    sink = new MemorySink();
    log.warn(
      { fastpath: config.fastpath, xdp: config.xdp?.interface },
      'running without BPF (in-memory datapath): connections are not steered, no fast path, no XDP',
    );
  } else {
    const bpf = (deps.bpf ?? loadNative)();
    const settings = resolveLbSettings();
    installed = install(bpf, {
      bpffsDir: config.bpffs,
      cgroupPath: config.cgroup,
      objects: SOCKET_LB_OBJECTS.map((path) => ({
        path: join(packageRoot(__dirname), path),
        options: { mapMaxEntries: lbMapMaxEntries(settings) },
        // Services in an older layout are copied over before the new programs take over.
        ...(path.endsWith('sock_lb.bpf.o')
          ? {
              prepare: (object: BpfObject) => {
                const done = migrateRetiredLbMaps(bpf, pinLayout(config.bpffs).mapsDir, object);
                if (done.migrated.length > 0) log.info(done, 'socket-LB maps migrated from an older layout');
              },
            }
          : {}),
      })),
    });
    log.info(
      {
        cgroup: config.cgroup,
        bpffs: config.bpffs,
        adopted: installed.adopted,
        links: installed.events.map((e) => `${e.object}/${e.program}:${e.action}`),
      },
      installed.adopted ? 'adopted the pinned data plane' : 'attached the data plane',
    );
    const lbSink = createSocketLbSink({
      installed,
      bpf,
      bpffs: config.bpffs,
      log: root.child({ component: 'datapath' }),
      settings,
      reaperObject: join(packageRoot(__dirname), REAPER_OBJECT),
    });
    closeSink = () => lbSink.close();
    // Probes the kernel first; a refusal is logged and leaves it off. Fed the local backends of each plan.
    fastPath = new AgentFastPath({
      bpf,
      mode: config.fastpath,
      bpffsDir: config.bpffs,
      cgroupPath: config.cgroup,
      objectPath: join(packageRoot(__dirname), FASTPATH_OBJECT_PATH),
      log: root.child({ component: 'fastpath' }),
      metrics,
    }).start();
    const planListeners = [(services: readonly ProgrammedService[]) => fastPath?.setServices(services)];
    if (config.xdp) {
      const agentXdp = new AgentXdp({
        bpf,
        ...config.xdp,
        encapSource4: config.xdp.encapSource4,
        encapSource6: config.xdp.encapSource6,
        bpffsDir: config.bpffs,
        objectDir: join(packageRoot(__dirname), XDP_OBJECT_DIR),
        log: root.child({ component: 'xdp' }),
        metrics,
      }).start();
      xdp = agentXdp;
      planListeners.push((services) => agentXdp.setServices(services));
    } else {
      const removed = removeXdpLinks(bpf, config.bpffs);
      if (removed.length > 0) log.info({ detached: removed }, 'xdp off: links of an earlier run detached');
    }
    sink = afterEachPlan(lbSink, ...planListeners);
  }

  const health = new HealthScheduler({
    probers: defaultProbers(),
    logger: root.child({ component: 'health' }),
  });
  const agent = new NodeAgent({
    node: config.node,
    zone: config.zone,
    sink,
    health,
    log: root.child({ component: 'sync' }),
    metrics,
    // Standalone: this agent is the only one, so it probes every backend in the file.
    ...(config.mode === 'standalone' ? { owns: () => true } : {}),
  });
  agent.start();

  // DNS: the responder answers from the last applied catalog; before the first one, an empty zone.
  let dns: DnsServer | undefined;
  let dnsPort: number | undefined;
  if (config.dns) {
    dns = new DnsServer({ logger: root, index: buildDnsIndex({ domain: 'cluster.invalid', services: [] }) });
    const server = dns;
    agent.onApplied((catalog, version) => {
      server.setIndex(
        buildDnsIndex({
          domain: catalog.domain,
          version,
          services: catalog.services.map((s) => ({
            name: s.name,
            namespace: s.namespace,
            vip: s.vips,
            ports: s.ports.map((p) => ({ name: p.name ?? undefined, port: p.port, protocol: p.protocol })),
          })),
        }),
      );
    });
    dnsPort = await dns.listen(config.dns.host, config.dns.port);
    log.info({ host: config.dns.host, port: dnsPort }, 'dns listening');
  }

  const stops: Array<() => Promise<void>> = [];
  if (config.mode === 'standalone') {
    const standalone = startStandalone({
      path: config.configFile!,
      agent,
      log: root.child({ component: 'catalog-file' }),
    });
    await standalone.ready;
    stops.push(() => standalone.stop());
  } else {
    let persisted: PersistedCatalog | undefined;
    const loaded = await loadState(config.stateDir);
    if (loaded.ok) {
      persisted = loaded.state;
      log.info(
        { dir: config.stateDir, version: persisted.version, services: persisted.services.length },
        'found a persisted catalog (used only while the controller is unreachable)',
      );
    } else if (!loaded.missing) {
      log.error({ dir: config.stateDir, reason: loaded.reason }, 'ignoring the persisted catalog: invalid');
    }
    const link = connectController({
      controller: config.controller!,
      node: config.node,
      zone: config.zone,
      agent,
      metrics,
      log: root.child({ component: 'controller-link' }),
      clientLog: root,
      ...(deps.backoff ? { backoff: deps.backoff } : {}),
      ...(credentials ? { credentials } : {}),
      stateDir: config.stateDir,
      ...(persisted ? { persisted } : {}),
      ...(deps.restoreAfterMs !== undefined ? { restoreAfterMs: deps.restoreAfterMs } : {}),
    });
    stops.push(link.stop);
  }

  let server: Server | undefined;
  if (config.metrics) {
    server = await serveMetrics(registry, config.metrics.host, config.metrics.port, log);
  }
  const address = server?.address();
  const metricsAddress =
    address && typeof address === 'object'
      ? `http://${config.metrics?.host}:${address.port}/metrics`
      : undefined;

  let stopped = false;
  const running: RunningAgent = {
    agent,
    sink,
    fastPath,
    xdp,
    dnsPort,
    registry,
    metricsAddress,
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const stop of stops) await stop();
      await agent.stop();
      await dns?.close();
      await new Promise<void>((done) => (server ? server.close(() => done()) : done()));
      // Only our fds: the pins keep programs, links and maps in place.
      fastPath?.close();
      xdp?.close();
      closeSink();
      installed?.close();
      log.info('stopped; the data plane stays in place');
      root.flush();
    },
  };
  deps.onReady?.(running);
  return running;
}

export async function runUninstall(
  config: Extract<AgentConfig, { command: 'uninstall' }>,
  deps: AgentDeps = {},
) {
  const log = makeLogger(config.logLevel, deps.logDestination).child({ component: 'uninstall' });
  const result = uninstall((deps.bpf ?? loadNative)(), { bpffsDir: config.bpffs, cgroupPath: config.cgroup });
  log.info(
    {
      cgroup: config.cgroup,
      bpffs: config.bpffs,
      detached: result.detached.length,
      removed: result.removed.length,
    },
    result.detached.length > 0 ? 'uninstalled' : 'nothing attached here',
  );
  return result;
}

/** The command line entry point (bin/sluice-agent). Resolves with the exit code for one-shot commands. */
export async function main(argv: readonly string[], deps: AgentDeps = {}): Promise<number | undefined> {
  let config: AgentConfig;
  try {
    config = loadAgentConfig(argv);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`sluice-agent: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  try {
    if (config.command === 'uninstall') {
      await runUninstall(config, deps);
      return 0;
    }
    const running = await runAgent(config, {
      ...deps,
      datapath: deps.datapath ?? (process.env.SLUICE_DATAPATH === 'memory' ? 'memory' : 'bpf'),
    });
    const shutdown = (signal: string) => {
      process.stderr.write(`sluice-agent: ${signal}, stopping (the data plane stays in place)\n`);
      running.stop().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
    return undefined;
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`sluice-agent: ${error.message}\n`);
      return 2;
    }
    const err = error as Error & { code?: string; op?: string };
    process.stderr.write(`sluice-agent: ${err.message}${err.code ? ` (${err.code})` : ''}\n`);
    return 1;
  }
}
