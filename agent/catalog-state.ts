/**
 * The last catalog this agent applied and ACKed in controller mode, kept on disk so that an agent
 * restarted while the controller is unreachable can resume its health checks (and its DNS answers) from
 * it instead of running blind until the controller is back.
 *
 * File: `<state-dir>/catalog.json`, written atomically (a temporary file in the same directory, fsync,
 * rename, fsync of the directory), so a crash leaves either the old or the new file, never half of one.
 * Writes are coalesced: while one is in flight only the newest pending state is kept.
 *
 * Reading never trusts the file: the envelope (format, epoch, version, domain), a checksum over the body,
 * every service as the agent would check it off the wire (fromWireService: IP addresses, enums) and the
 * ranges the data plane relies on (ports, weights, thresholds) are validated; any problem makes the whole
 * file ignored, with the reason.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { AppliedState } from '../controller/agent-client';
import { fromWireService, type SyncedService, toWireService, type WireService } from '../controller/protocol';

export const STATE_FILE = 'catalog.json';
const FORMAT = 1;

/** What is persisted: the ACKed catalog and the probe assignment that came with it. */
export interface PersistedCatalog {
  readonly epoch: string;
  readonly version: number;
  readonly domain: string;
  readonly services: readonly SyncedService[];
  /** Backends this agent was told to probe (`service|address|port`), when the controller said. */
  readonly probes: readonly string[] | undefined;
}

export type LoadResult =
  | { readonly ok: true; readonly state: PersistedCatalog }
  | { readonly ok: false; readonly missing: boolean; readonly reason: string };

const port = z.number().int().min(1).max(65535);
const portOrZero = z.number().int().min(0).max(65535);
const positive = z.number().int().min(1);

const wireServiceSchema = z.object({
  key: z.string().min(1),
  name: z.string().min(1),
  namespace: z.string().min(1),
  revision: z.string(),
  vips: z.array(z.string()).min(1),
  externalIps: z.array(z.string()).optional(),
  ports: z.array(z.object({ name: z.string(), port, targetPort: port, protocol: z.string() })).min(1),
  algorithm: z.string(),
  affinity: z.object({ mode: z.string(), timeoutMs: z.number().int().min(0) }).nullable(),
  trafficDistribution: z.string(),
  healthCheck: z
    .object({
      protocol: z.string(),
      path: z.string(),
      service: z.string(),
      port: portOrZero,
      intervalMs: positive,
      timeoutMs: positive,
      healthyThreshold: positive,
      unhealthyThreshold: positive,
      expectedStatusMin: z.number().int().min(100).max(599),
      expectedStatusMax: z.number().int().min(100).max(599),
    })
    .nullable(),
  outlierDetection: z
    .object({
      consecutiveFailures: positive,
      baseEjectionTimeMs: positive,
      maxEjectionPercent: z.number().int().min(0).max(100),
    })
    .nullable(),
  backends: z.array(
    z.object({
      address: z.string(),
      port: portOrZero,
      weight: z.number().int().min(0).max(65535),
      node: z.string(),
      zone: z.string(),
      health: z.enum(['HEALTH_UNKNOWN', 'HEALTHY', 'UNHEALTHY']),
      healthReason: z.string(),
    }),
  ),
});

const bodySchema = z.object({
  epoch: z.string(),
  version: z.number().int().min(1),
  domain: z.string().min(1),
  services: z.array(wireServiceSchema),
  probes: z.array(z.string()).nullable(),
});

const fileSchema = z.object({
  format: z.literal(FORMAT),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  body: z.unknown(),
});

/** The wire form of a service as received (revision kept as the controller stamped it). Pure. */
export function toWire(s: SyncedService): WireService {
  return toWireService(s, (b) => ({ state: b.health, reason: b.healthReason }), s.revision);
}

/** The file's text for a state. Pure. */
export function encodeState(state: PersistedCatalog): string {
  const body = {
    epoch: state.epoch,
    version: state.version,
    domain: state.domain,
    services: state.services.map(toWire),
    probes: state.probes ? [...state.probes] : null,
  };
  const text = JSON.stringify(body);
  return `${JSON.stringify({ format: FORMAT, sha256: sha256(text), body })}\n`;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function issueText(error: z.ZodError, prefix: string): string {
  const issue = error.issues[0]!;
  const path = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
  return `${prefix}${path}: ${issue.message}`;
}

/** Parses and validates the file's text. Pure; never throws. */
export function decodeState(text: string): LoadResult {
  const fail = (reason: string): LoadResult => ({ ok: false, missing: false, reason });
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    return fail(`not JSON (${(error as Error).message})`);
  }
  const file = fileSchema.safeParse(raw);
  if (!file.success) return fail(issueText(file.error, ''));
  if (sha256(JSON.stringify(file.data.body)) !== file.data.sha256) {
    return fail('sha256: does not match the body (the file was changed or damaged)');
  }
  const body = bodySchema.safeParse(file.data.body);
  if (!body.success) return fail(issueText(body.error, 'body'));
  const services: SyncedService[] = [];
  const keys = new Set<string>();
  const listeners = new Set<string>();
  for (const [i, wire] of body.data.services.entries()) {
    const at = `body.services[${i}]`;
    let service: SyncedService;
    try {
      service = fromWireService(wire as WireService);
    } catch (error) {
      return fail(`${at}: ${(error as Error).message}`);
    }
    if (keys.has(service.key)) return fail(`${at}.key: duplicate service ${service.key}`);
    keys.add(service.key);
    if (service.healthCheck && service.healthCheck.timeoutMs > service.healthCheck.intervalMs) {
      return fail(`${at}.healthCheck.timeoutMs: must not exceed intervalMs`);
    }
    for (const vip of [...service.vips, ...service.externalIPs]) {
      for (const p of service.ports) {
        const listener = `${vip}|${p.port}|${p.protocol}`;
        if (listeners.has(listener)) return fail(`${at}: duplicate VIP:port ${vip}:${p.port}/${p.protocol}`);
        listeners.add(listener);
      }
    }
    services.push(service);
  }
  return {
    ok: true,
    state: {
      epoch: body.data.epoch,
      version: body.data.version,
      domain: body.data.domain,
      services,
      probes: body.data.probes ?? undefined,
    },
  };
}

/** Reads `<dir>/catalog.json`. Never throws: a missing, unreadable or invalid file is a reason. */
export async function loadState(dir: string): Promise<LoadResult> {
  let text: string;
  try {
    text = await readFile(join(dir, STATE_FILE), 'utf8');
  } catch (error) {
    const err = error as NodeJS.ErrnoException;
    return { ok: false, missing: err.code === 'ENOENT', reason: `cannot read: ${err.message}` };
  }
  return decodeState(text);
}

/** What the agent client should say in its Hello for a persisted state. Pure. */
export function appliedStateOf(state: PersistedCatalog): AppliedState {
  return {
    epoch: state.epoch,
    version: state.version,
    domain: state.domain,
    services: new Map(state.services.map((s) => [s.key, s.revision])),
  };
}

/** Writes states atomically, one at a time, keeping only the newest one pending. */
export class StateWriter {
  private pending: PersistedCatalog | undefined;
  private running: Promise<void> | undefined;
  private sequence = 0;

  constructor(
    private readonly dir: string,
    private readonly onError: (error: Error) => void,
    private readonly onWritten: (state: PersistedCatalog) => void = () => {},
  ) {}

  /** Queues a state; resolves once it (or a newer one) is on disk, or the attempt failed. */
  save(state: PersistedCatalog): Promise<void> {
    this.pending = state;
    if (!this.running) {
      this.running = this.drain().finally(() => {
        this.running = undefined;
      });
    }
    return this.running;
  }

  /** Resolves when nothing is left to write. */
  async flush(): Promise<void> {
    while (this.running) await this.running;
  }

  private async drain(): Promise<void> {
    while (this.pending) {
      const state = this.pending;
      this.pending = undefined;
      try {
        await this.write(encodeState(state));
        this.onWritten(state);
      } catch (error) {
        this.onError(error as Error);
      }
    }
  }

  private async write(text: string): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const target = join(this.dir, STATE_FILE);
    const tmp = join(this.dir, `.${STATE_FILE}.${process.pid}.${++this.sequence}.tmp`);
    try {
      const file = await open(tmp, 'w', 0o600);
      try {
        await file.writeFile(text);
        await file.sync();
      } finally {
        await file.close();
      }
      await rename(tmp, target);
    } catch (error) {
      await rm(tmp, { force: true });
      throw error;
    }
    // The rename is durable once the directory is synced.
    const dir = await open(this.dir, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}
