import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mtlsCredentials } from '../../controller/agent-client';
import {
  type AgentMessage,
  type ControllerMessage,
  loadPackageDefinition,
  SERVICE_NAME,
} from '../../controller/protocol';
import { makePki, type Pki } from '../support/pki';
import { catalogDoc, type Harness, startController, TestAgent, tempDir, waitFor } from './helpers';

describe('mTLS', () => {
  let pki: Pki;
  let h: Harness;
  let cleanup: () => void;

  beforeAll(async () => {
    const t = tempDir('sluice-pki-');
    cleanup = t.cleanup;
    pki = makePki(t.dir);
    h = await startController(
      catalogDoc([{ name: 'web', vip: '10.96.0.10', backends: [{ address: '10.0.0.1' }] }]),
      {
        tls: {
          cert: pki.file('controller.crt'),
          key: pki.file('controller.key'),
          ca: pki.file('sluice-ca.crt'),
        },
      },
    );
  });

  afterAll(async () => {
    await h?.stop();
    cleanup?.();
  });

  /** Opens a Sync stream with the given credentials and resolves with its outcome. */
  function attempt(
    credentials: grpc.ChannelCredentials,
  ): Promise<{ code: grpc.status; details: string; got: number }> {
    const def = loadPackageDefinition()[SERVICE_NAME] as protoLoader.ServiceDefinition;
    const sync = def.Sync as unknown as grpc.MethodDefinition<AgentMessage, ControllerMessage>;
    const client = new grpc.Client(h.target, credentials);
    const call = client.makeBidiStreamRequest(sync.path, sync.requestSerialize, sync.responseDeserialize);
    let got = 0;
    return new Promise((resolve) => {
      call.on('data', () => {
        got++;
        call.cancel();
      });
      call.on('error', () => {});
      call.on('status', (s) => {
        client.close();
        resolve({ code: s.code, details: s.details, got });
      });
      call.write({
        hello: { node: 'node-x', zone: '', epoch: '', version: 0, services: [], agentVersion: '' },
      });
    });
  }

  test('an agent with a certificate from the cluster CA is served', async () => {
    const a = new TestAgent(h.target, 'node-a', {
      credentials: mtlsCredentials({
        ca: pki.file('sluice-ca.crt'),
        cert: pki.file('node-a.crt'),
        key: pki.file('node-a.key'),
      }),
    }).start();
    try {
      await waitFor(() => a.client.applied.version === 1, 'snapshot over mTLS');
      expect(a.keys()).toEqual(['default/web']);
    } finally {
      a.stop();
    }
  });

  test('a client without a certificate is rejected', async () => {
    const outcome = await attempt(
      grpc.credentials.createSsl(require('node:fs').readFileSync(pki.file('sluice-ca.crt'))),
    );
    expect(outcome.got).toBe(0);
    expect(outcome.code).toBe(grpc.status.UNAVAILABLE);
  });

  test('a client certificate from another CA is rejected', async () => {
    const outcome = await attempt(
      mtlsCredentials({
        ca: pki.file('sluice-ca.crt'),
        cert: pki.file('intruder.crt'),
        key: pki.file('intruder.key'),
      }),
    );
    expect(outcome.got).toBe(0);
    expect(outcome.code).toBe(grpc.status.UNAVAILABLE);
  });

  test('a plaintext client is rejected', async () => {
    const outcome = await attempt(grpc.credentials.createInsecure());
    expect(outcome.got).toBe(0);
    expect(outcome.code).toBe(grpc.status.UNAVAILABLE);
  });
});

describe('plaintext policy', () => {
  test('plaintext on a non-loopback address needs --insecure', async () => {
    await expect(startController(catalogDoc([]), { listen: '0.0.0.0:0' })).rejects.toThrow(
      'refusing plaintext gRPC on non-loopback address 0.0.0.0:0: give --tls-cert, --tls-key and --tls-ca, or --insecure',
    );
  });
});
