import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { Registry } from 'prom-client';
import { AgentClient, type AgentClientOptions, type CatalogUpdate } from '../../controller/agent-client';
import { systemClock } from '../../controller/clock';
import { ControllerServer, type ControllerServerOptions } from '../../controller/server';
import { FileCatalogSource } from '../../controller/source-file';

/** A temp dir removed by the returned cleanup. */
export function tempDir(prefix = 'sluice-controller-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface ServiceSpec {
  name: string;
  namespace?: string;
  vip: string;
  port?: number;
  backends: { address: string; node?: string; weight?: number; port?: number }[];
  healthCheck?: object;
}

/** Builds a catalog document (as an object, written as JSON or YAML by the caller). */
export function catalogDoc(services: ServiceSpec[], domain = 'mesh.local'): object {
  return {
    domain,
    services: services.map((s) => ({
      name: s.name,
      ...(s.namespace ? { namespace: s.namespace } : {}),
      vip: s.vip,
      ports: [{ name: 'http', port: s.port ?? 80, targetPort: 8080 }],
      ...(s.healthCheck ? { healthCheck: s.healthCheck } : {}),
      backends: s.backends,
    })),
  };
}

/** Writes a file the way editors do: a new file renamed over the old one. */
export function writeAtomic(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  require('node:fs').renameSync(`${path}.tmp`, path);
}

export interface Harness {
  server: ControllerServer;
  port: number;
  target: string;
  registry: Registry;
  path: string;
  dir: string;
  write(doc: object | string): void;
  stop(): Promise<void>;
}

export async function startController(
  initial: object | string,
  options: Partial<ControllerServerOptions> & { listen?: string } = {},
): Promise<Harness> {
  const { dir, cleanup } = tempDir();
  const path = join(dir, 'services.yaml');
  const write = (doc: object | string) =>
    writeAtomic(path, typeof doc === 'string' ? doc : JSON.stringify(doc, null, 1));
  write(initial);
  const logger = pino({ level: process.env.SLUICE_TEST_LOG ?? 'silent' });
  const registry = new Registry();
  const source = new FileCatalogSource({ path, clock: systemClock, logger, debounceMs: 10, pollMs: 200 });
  const server = new ControllerServer({ source, logger, registry, ...options });
  let port: number;
  try {
    port = await server.start(options.listen ?? '127.0.0.1:0');
  } catch (err) {
    await server.stop();
    cleanup();
    throw err;
  }
  return {
    server,
    port,
    target: `127.0.0.1:${port}`,
    registry,
    path,
    dir,
    write,
    stop: async () => {
      await server.stop();
      cleanup();
    },
  };
}

/** An agent that records every update and ACKs it (unless `decide` says otherwise). */
export class TestAgent {
  readonly updates: CatalogUpdate[] = [];
  readonly probes: { service: string; address: string; port: number | null }[][] = [];
  readonly client: AgentClient;

  constructor(
    target: string,
    node: string,
    options: Partial<AgentClientOptions> & {
      decide?: (u: CatalogUpdate) => string | null;
      credentials?: grpc.ChannelCredentials;
    } = {},
  ) {
    const { decide, ...rest } = options;
    this.client = new AgentClient({
      target,
      node,
      zone: 'zone-1',
      backoff: { initialMs: 50, maxMs: 200 },
      onUpdate: (u) => {
        this.updates.push(u);
        const reason = decide?.(u) ?? null;
        if (reason === null) this.client.ack(u.version);
        else this.client.nack(u.version, reason);
      },
      onProbes: (p) => this.probes.push([...p]),
      ...rest,
    });
  }

  start(): this {
    this.client.start();
    return this;
  }

  stop(): void {
    this.client.stop();
  }

  last(): CatalogUpdate | undefined {
    return this.updates.at(-1);
  }

  /** Service keys currently applied. */
  keys(): string[] {
    return [...this.client.applied.services.keys()].sort();
  }
}

/** Polls until `check` returns a truthy value (or throws after `timeoutMs`). */
export async function waitFor<T>(
  check: () => T | undefined | null | false,
  what: string,
  timeoutMs = 5000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Reads one metric's value (first series matching the labels). */
export async function metricValue(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number | undefined> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return undefined;
  const data = await metric.get();
  const match = data.values.find((v) =>
    Object.entries(labels).every(([k, val]) => (v.labels as Record<string, unknown>)[k] === val),
  );
  return match?.value;
}
