/**
 * The persisted catalog (agent/catalog-state.ts): atomic writes on a real filesystem, and a reader that
 * refuses anything it cannot trust, each with the reason.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  appliedStateOf,
  decodeState,
  encodeState,
  loadState,
  type PersistedCatalog,
  STATE_FILE,
  StateWriter,
} from '../../agent/catalog-state';
import { parseCatalog } from '../../controller/catalog';
import { fromWireService, type SyncedService, toWireService } from '../../controller/protocol';

/** Services as the controller sends them: parsed from a file, stamped with health and a revision. */
function synced(weights: number[] = [3, 1]): SyncedService[] {
  const result = parseCatalog(
    JSON.stringify({
      domain: 'mesh.local',
      services: [
        {
          name: 'web',
          namespace: 'default',
          vip: ['10.96.0.10', 'fd00::10'],
          ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
          healthCheck: { protocol: 'http', path: '/healthz', interval: '1s', timeout: '500ms' },
          outlierDetection: { consecutiveFailures: 3 },
          backends: weights.map((weight, i) => ({
            address: `10.0.1.${i + 1}`,
            weight,
            node: 'node-a',
            zone: 'zone-1',
          })),
        },
        {
          name: 'dns',
          namespace: 'kube-system',
          vip: '10.96.0.53',
          ports: [{ port: 53, targetPort: 53, protocol: 'UDP' }],
          backends: [{ address: '192.0.2.7', port: 5353 }],
        },
      ],
    }),
    'services.json',
  );
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.catalog.services.map((s) =>
    fromWireService(
      toWireService(s, (b) =>
        b.address === '10.0.1.2'
          ? { state: 'unhealthy', reason: 'http 503' }
          : { state: 'healthy', reason: '' },
      ),
    ),
  );
}

const state = (over: Partial<PersistedCatalog> = {}): PersistedCatalog => ({
  epoch: 'e-1',
  version: 7,
  domain: 'mesh.local',
  services: synced(),
  probes: ['default/web|10.0.1.1|0'],
  ...over,
});

/** Rewrites the body with `edit` and a matching checksum, as a careful tamperer (or a bug) would. */
function rewrite(text: string, edit: (body: Record<string, unknown>) => void): string {
  const file = JSON.parse(text) as { body: Record<string, unknown>; sha256: string };
  edit(file.body);
  file.sha256 = require('node:crypto').createHash('sha256').update(JSON.stringify(file.body)).digest('hex');
  return JSON.stringify(file);
}

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-state-'));
  dirs.push(dir);
  return dir;
}
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('encode / decode', () => {
  it('round-trips every field the agent uses, including health and revisions', () => {
    const original = state();
    const decoded = decodeState(encodeState(original));
    expect(decoded).toEqual({ ok: true, state: original });
    if (!decoded.ok) return;
    expect(decoded.state.services[0]!.backends[1]).toMatchObject({
      health: 'unhealthy',
      healthReason: 'http 503',
    });
    expect(appliedStateOf(decoded.state)).toEqual({
      epoch: 'e-1',
      version: 7,
      domain: 'mesh.local',
      services: new Map(original.services.map((s) => [s.key, s.revision])),
    });
  });

  it('keeps "no probe assignment yet" apart from an empty one', () => {
    const none = decodeState(encodeState(state({ probes: undefined })));
    const empty = decodeState(encodeState(state({ probes: [] })));
    expect(none.ok && none.state.probes).toBeUndefined();
    expect(empty.ok && empty.state.probes).toEqual([]);
  });

  const good = () => encodeState(state());
  it.each<[string, () => string, RegExp]>([
    ['truncated', () => good().slice(0, 200), /^not JSON/],
    ['another format', () => good().replace('"format":1', '"format":2'), /^\.format: /],
    ['a changed byte', () => good().replace('10.0.1.1', '10.0.1.9'), /^sha256: does not match the body/],
    ['a version that is not a number', () => rewrite(good(), (b) => (b.version = '7')), /^body\.version: /],
    [
      'a weight out of range',
      () =>
        rewrite(good(), (b) => {
          (b.services as { backends: { weight: number }[] }[])[0]!.backends[0]!.weight = 70000;
        }),
      /^body\.services\[0\]\.backends\[0\]\.weight: /,
    ],
    [
      'an address that is not an IP',
      () =>
        rewrite(good(), (b) => {
          (b.services as { backends: { address: string }[] }[])[0]!.backends[0]!.address = 'evil.example';
        }),
      /^body\.services\[0\]: service default\/web backend: 'evil\.example' is not an IP address$/,
    ],
    [
      'an unknown algorithm',
      () =>
        rewrite(good(), (b) => {
          (b.services as { algorithm: string }[])[1]!.algorithm = 'fastest';
        }),
      /^body\.services\[1\]: service kube-system\/dns algorithm: unknown value 'fastest'$/,
    ],
    [
      'a duplicate service',
      () =>
        rewrite(good(), (b) => {
          const services = b.services as unknown[];
          services.push(services[0]);
        }),
      /^body\.services\[2\]\.key: duplicate service default\/web$/,
    ],
    [
      'a zero probe interval',
      () =>
        rewrite(good(), (b) => {
          (b.services as { healthCheck: { intervalMs: number } }[])[0]!.healthCheck.intervalMs = 0;
        }),
      /^body\.services\[0\]\.healthCheck\.intervalMs: /,
    ],
  ])('refuses %s, with the reason', (_, text, reason) => {
    const result = decodeState(text());
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.reason).toMatch(reason);
      expect(result.missing).toBe(false);
    }
  });
});

describe('StateWriter and loadState on disk', () => {
  it('reports a missing file as missing', async () => {
    const result = await loadState(tempDir());
    expect(result).toMatchObject({ ok: false, missing: true });
  });

  it('writes atomically, keeps only the newest of a burst, and leaves no temporary files', async () => {
    const dir = join(tempDir(), 'nested', 'state');
    const errors: Error[] = [];
    const written: number[] = [];
    const writer = new StateWriter(
      dir,
      (e) => errors.push(e),
      (s) => written.push(s.version),
    );
    for (let version = 1; version <= 20; version++) void writer.save(state({ version }));
    await writer.flush();
    expect(errors).toEqual([]);
    // The first write started at once; the 19 that came while it ran collapsed into the newest one.
    expect(written).toEqual([1, 20]);
    expect(readdirSync(dir)).toEqual([STATE_FILE]);
    const loaded = await loadState(dir);
    expect(loaded.ok && loaded.state.version).toBe(20);
    expect(loaded.ok && loaded.state.services.map((s) => s.key)).toEqual(['default/web', 'kube-system/dns']);
  });

  it('replaces the file whole: a reader sees the old or the new state, never a mix', async () => {
    const dir = tempDir();
    const writer = new StateWriter(dir, (e) => {
      throw e;
    });
    await writer.save(state({ version: 1, services: synced([3, 1]) }));
    const before = readFileSync(join(dir, STATE_FILE), 'utf8');
    const reads: number[] = [];
    const saving = writer.save(state({ version: 2, services: synced([1, 1, 1]) }));
    // Read while the write is in flight, as a restarting agent might.
    for (let i = 0; i < 50; i++) {
      const r = await loadState(dir);
      if (!r.ok) throw new Error(r.reason);
      reads.push(r.state.version);
    }
    await saving;
    const after = await loadState(dir);
    expect(after.ok && after.state.services[0]!.backends.length).toBe(3);
    expect(reads.every((v) => v === 1 || v === 2)).toBe(true);
    expect(readFileSync(join(dir, STATE_FILE), 'utf8')).not.toBe(before);
  });

  it('reports a write that cannot happen, and keeps going', async () => {
    const root = tempDir();
    // A regular file where the directory should be: mkdir fails with ENOTDIR/EEXIST.
    writeFileSync(join(root, 'blocked'), 'x');
    const errors: Error[] = [];
    const writer = new StateWriter(join(root, 'blocked'), (e) => errors.push(e));
    await writer.save(state());
    expect(errors).toHaveLength(1);
    expect((errors[0] as NodeJS.ErrnoException).code).toMatch(/ENOTDIR|EEXIST/);
  });
});
