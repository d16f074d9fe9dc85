/**
 * The agent's controller link in-process (runAgent over the in-memory datapath, so no BPF is needed) with a
 * real controller, real gRPC over mTLS, real TCP backends and real health probes:
 * - the agent syncs with certificates from the cluster CA, and is refused with a client certificate from
 *   another CA, or when it does not trust the controller's CA;
 * - every ACKed catalog is persisted; an agent restarted while the controller is unreachable applies it,
 *   probes again and moves a dead backend out of selection; the controller's first answer replaces it;
 * - a persisted catalog that fails validation is logged and never applied.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadState, STATE_FILE } from '../../agent/catalog-state';
import { loadAgentConfig, type RunConfig } from '../../agent/config';
import type { MemorySink } from '../../agent/datapath-sink';
import { type RunningAgent, runAgent } from '../../agent/main';
import { catalogDoc, type Harness, startController } from '../controller/helpers';
import { makePki, type Pki } from '../support/pki';

const HEALTH = {
  protocol: 'tcp',
  interval: '100ms',
  timeout: '80ms',
  healthyThreshold: 2,
  unhealthyThreshold: 2,
};

class Lines extends Writable {
  readonly lines: Array<Record<string, unknown>> = [];
  override _write(chunk: Buffer, _: string, done: () => void): void {
    for (const text of chunk.toString().split('\n')) if (text) this.lines.push(JSON.parse(text));
    done();
  }
  has(msg: string): Record<string, unknown> | undefined {
    return this.lines.find((l) => l.msg === msg);
  }
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

let dir: string;
let pki: Pki;
const backends: Server[] = [];
const ports: number[] = [];
const agents: RunningAgent[] = [];
const controllers: Harness[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-agent-tls-'));
  pki = makePki(dir);
  for (let i = 0; i < 3; i++) {
    const server = createServer((socket) => {
      socket.on('error', () => {});
      socket.end('ok\n');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    backends.push(server);
    ports.push((server.address() as { port: number }).port);
  }
}, 60_000);

afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.stop();
  for (const controller of controllers.splice(0)) await controller.stop();
});

afterAll(async () => {
  for (const server of backends) server.close();
  rmSync(dir, { recursive: true, force: true });
});

function catalog(weights: number[]) {
  return catalogDoc([
    {
      name: 'web',
      vip: '10.96.0.10',
      healthCheck: HEALTH,
      backends: weights.map((weight, i) => ({
        address: '127.0.0.1',
        port: ports[i]!,
        weight,
        node: 'node-a',
      })),
    },
  ]);
}

async function controller(weights: number[], listen = '127.0.0.1:0'): Promise<Harness> {
  const h = await startController(catalog(weights), {
    listen,
    tls: { cert: pki.file('controller.crt'), key: pki.file('controller.key'), ca: pki.file('sluice-ca.crt') },
  });
  controllers.push(h);
  return h;
}

async function agent(
  target: string,
  stateDir: string,
  tls: string[],
): Promise<{ a: RunningAgent; log: Lines }> {
  const config = loadAgentConfig([
    '--controller',
    target,
    '--node',
    'node-a',
    ...tls,
    '--state-dir',
    stateDir,
    '--cgroup',
    '/unused',
    '--bpffs',
    '/unused',
    '--metrics',
    'off',
    '--dns',
    'off',
    '--log-level',
    'debug',
  ]) as RunConfig;
  const log = new Lines();
  const a = await runAgent(config, {
    datapath: 'memory',
    logDestination: log,
    backoff: { initialMs: 50, maxMs: 200 },
    restoreAfterMs: 2000,
  });
  agents.push(a);
  return { a, log };
}

/** Backend port → draining, as the in-memory datapath holds it. */
function programmed(a: RunningAgent): Record<number, { weight: number; draining: boolean }> {
  const out: Record<number, { weight: number; draining: boolean }> = {};
  for (const s of (a.sink as MemorySink).services()) {
    for (const b of s.backends) out[b.port] = { weight: b.weight, draining: b.draining };
  }
  return out;
}

describe('agent ↔ controller over mTLS', () => {
  it('syncs with certificates from the cluster CA and persists what it ACKed', async () => {
    const h = await controller([3, 2, 1]);
    const state = join(dir, 'state-ok');
    const { a } = await agent(h.target, state, pki.agentFlags('node-a'));
    await until('catalog applied', () => a.agent.appliedVersion > 0n);
    expect(ports.map((port) => programmed(a)[port]?.weight)).toEqual([3, 2, 1]);
    // The controller assigns this node's three backends to it (after the snapshot); that is kept too.
    // Health reports make the controller push new versions meanwhile: wait for the file to catch up.
    let saved = await loadState(state);
    const deadline = Date.now() + 10_000;
    const settled = () =>
      saved.ok && saved.state.probes?.length === 3 && saved.state.version === Number(a.agent.appliedVersion);
    while (!settled() && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      saved = await loadState(state);
    }
    expect(saved.ok && saved.state.version).toBe(Number(a.agent.appliedVersion));
    expect(saved.ok && saved.state.services.map((s) => s.key)).toEqual(['default/web']);
    expect(saved.ok && saved.state.probes?.length).toBe(3);
  });

  it.each([
    ['a client certificate from another CA', () => pki.agentFlags('intruder', 'sluice-ca')],
    ['a controller certificate it does not trust', () => pki.agentFlags('node-a', 'rogue-ca')],
  ])('is refused with %s and never applies or persists anything', async (_, flags) => {
    const h = await controller([1, 1, 1]);
    const state = join(dir, `state-refused-${Math.random().toString(16).slice(2)}`);
    const { a, log } = await agent(h.target, state, flags());
    await until(
      'two refused attempts',
      () => log.lines.filter((l) => l.msg === 'controller disconnected').length >= 2,
    );
    const refused = log.has('controller disconnected')!;
    expect(String(refused.detail)).toMatch(/^UNAVAILABLE/);
    expect(a.agent.appliedVersion).toBe(0n);
    expect(log.has('catalog applied')).toBeUndefined();
    expect((await loadState(state)).ok).toBe(false);
  });

  it('a plaintext agent is refused by the mTLS controller', async () => {
    const h = await controller([1, 1, 1]);
    const { a, log } = await agent(h.target, join(dir, 'state-plain'), []);
    await until('refused', () => log.has('controller disconnected') !== undefined);
    expect(a.agent.appliedVersion).toBe(0n);
  });

  it('names the flag of an unreadable certificate file', async () => {
    const flags = pki.agentFlags('node-a');
    flags[3] = join(dir, 'missing.key');
    await expect(agent('127.0.0.1:1', join(dir, 'state-x'), flags)).rejects.toThrow(
      /^--tls-key: cannot read .*missing\.key: ENOENT/,
    );
  });
});

describe('restart while the controller is unreachable', () => {
  it('applies the persisted catalog, probes, moves traffic off a dead backend, and yields to the controller', async () => {
    const state = join(dir, 'state-restart');
    // First life: sync and persist, then stop (the controller goes away too).
    const h = await controller([1, 1, 1]);
    const port = h.port;
    const first = await agent(h.target, state, pki.agentFlags('node-a'));
    await until('persisted', () => first.log.has('catalog persisted') !== undefined);
    await first.a.stop();
    agents.splice(agents.indexOf(first.a), 1);
    await h.stop();
    controllers.splice(controllers.indexOf(h), 1);
    const saved = await loadState(state);
    if (!saved.ok) throw new Error(saved.reason);
    const version = saved.state.version;

    // Second life: nothing listens; the persisted catalog is used and the probes run again.
    const { a, log } = await agent(`127.0.0.1:${port}`, state, pki.agentFlags('node-a'));
    await until('persisted catalog applied', () => log.has('persisted catalog applied') !== undefined);
    expect(log.has('controller unreachable: applying the persisted catalog')).toMatchObject({ version });
    expect(a.agent.appliedVersion).toBe(BigInt(version));
    await until('first probes', () => log.lines.some((l) => l.msg === 'backend health changed'));
    expect(Object.values(programmed(a)).every((b) => !b.draining)).toBe(true);

    // A backend dies: local probes take it out of selection with no controller anywhere.
    const dead = backends[2]!;
    await new Promise<void>((r) => dead.close(() => r()));
    try {
      await until('dead backend drained', () => programmed(a)[ports[2]!]?.draining === true, 5000);
      expect(programmed(a)[ports[0]!]?.draining).toBe(false);
      expect(programmed(a)[ports[1]!]?.draining).toBe(false);

      // The controller comes back (same address, a new epoch, other weights): its snapshot replaces the
      // persisted catalog, and that is what is persisted next.
      await controller([5, 4, 1], `127.0.0.1:${port}`);
      await until('resync', () => log.lines.filter((l) => l.msg === 'catalog applied').length >= 2, 10_000);
      expect(programmed(a)[ports[0]!]?.weight).toBe(5);
      expect(programmed(a)[ports[1]!]?.weight).toBe(4);
      // Still out of selection: local health outlives the catalog swap.
      expect(programmed(a)[ports[2]!]?.draining).toBe(true);
      await until('new state persisted', () => {
        const text = readFileSync(join(state, STATE_FILE), 'utf8');
        return text.includes('"weight":5');
      });
    } finally {
      // Put the backend back for any later test.
      await new Promise<void>((r) => dead.listen(ports[2], '127.0.0.1', () => r()));
    }
  }, 40_000);

  it('logs and ignores a persisted catalog that fails validation', async () => {
    const h = await controller([1, 1, 1]);
    const state = join(dir, 'state-tampered');
    const first = await agent(h.target, state, pki.agentFlags('node-a'));
    await until('persisted', () => first.log.has('catalog persisted') !== undefined);
    const port = h.port;
    await first.a.stop();
    agents.splice(agents.indexOf(first.a), 1);
    await h.stop();
    controllers.splice(controllers.indexOf(h), 1);
    const path = join(state, STATE_FILE);
    writeFileSync(path, readFileSync(path, 'utf8').replace('"weight":1', '"weight":9'));

    const { a, log } = await agent(`127.0.0.1:${port}`, state, pki.agentFlags('node-a'));
    await until(
      'refused state logged',
      () => log.has('ignoring the persisted catalog: invalid') !== undefined,
    );
    expect(String(log.has('ignoring the persisted catalog: invalid')!.reason)).toMatch(
      /^sha256: does not match/,
    );
    await until('controller unreachable', () => log.has('controller disconnected') !== undefined);
    await new Promise((r) => setTimeout(r, 300));
    expect(a.agent.appliedVersion).toBe(0n);
    expect(a.agent.currentCatalog).toBeUndefined();
    expect(log.has('controller unreachable: applying the persisted catalog')).toBeUndefined();
  });
});
