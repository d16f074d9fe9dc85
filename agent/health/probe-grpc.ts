/**
 * grpc probe: grpc.health.v1.Health/Check with the configured service name ('' = whole server);
 * healthy only on SERVING. One channel per backend is kept between probes (as Envoy does), with its
 * reconnect backoff capped at the probe interval so a restarted backend is seen at the next probe.
 */
import { type Client, credentials, makeClientConstructor, type ServiceError, status } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { connectReason, type ProbeOutcome, type Prober, type ProbeTarget } from './types';

type CheckCallback = (err: ServiceError | null, res?: { status?: string }) => void;
interface HealthClient extends Client {
  Check(req: { service: string }, options: { deadline: number }, cb: CheckCallback): { cancel(): void };
}

// grpc-health-check builds its definition with its own copy of proto-loader; the shape is the same.
const HealthClientCtor = makeClientConstructor(
  healthService as unknown as Parameters<typeof makeClientConstructor>[0],
  'grpc.health.v1.Health',
) as unknown as new (
  address: string,
  creds: ReturnType<typeof credentials.createInsecure>,
  options: Record<string, number>,
) => HealthClient;

function channelKey(target: ProbeTarget): string {
  return target.address.includes(':')
    ? `[${target.address}]:${target.port}`
    : `${target.address}:${target.port}`;
}

/** A gRPC error as a probe reason: `connect ECONNREFUSED` when the channel could not connect. */
export function grpcErrorReason(err: ServiceError): string {
  const connect = /connect (E[A-Z]+)/.exec(err.details ?? '');
  if (err.code === status.UNAVAILABLE && connect) return `connect ${connect[1]}`;
  const name = status[err.code] ?? String(err.code);
  return `grpc ${name}`;
}

export class GrpcProber implements Prober {
  private readonly clients = new Map<string, HealthClient>();

  private client(target: ProbeTarget): HealthClient {
    // One channel per target (not per address): releasing one target never cuts another's probe.
    let client = this.clients.get(target.key);
    if (!client) {
      const backoff = Math.max(100, Math.min(target.check.intervalMs, 5000));
      client = new HealthClientCtor(channelKey(target), credentials.createInsecure(), {
        'grpc.initial_reconnect_backoff_ms': Math.min(100, backoff),
        'grpc.max_reconnect_backoff_ms': backoff,
        'grpc.use_local_subchannel_pool': 1,
        'grpc.enable_retries': 0,
      });
      this.clients.set(target.key, client);
    }
    return client;
  }

  probe(target: ProbeTarget, signal: AbortSignal): Promise<ProbeOutcome> {
    return new Promise((resolve) => {
      if (signal.aborted) {
        resolve({ ok: false, reason: 'aborted' });
        return;
      }
      let settled = false;
      const finish = (outcome: ProbeOutcome) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        resolve(outcome);
      };
      let call: { cancel(): void } | undefined;
      const onAbort = () => {
        finish({ ok: false, reason: 'aborted' });
        call?.cancel();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        call = this.client(target).Check(
          { service: target.check.grpcService ?? '' },
          { deadline: Date.now() + target.check.timeoutMs },
          (err, res) => {
            if (err) {
              finish({ ok: false, reason: grpcErrorReason(err) });
              return;
            }
            const servingStatus = res?.status ?? 'UNKNOWN';
            finish({ ok: servingStatus === 'SERVING', reason: `grpc ${servingStatus}` });
          },
        );
      } catch (err) {
        finish({ ok: false, reason: connectReason(err) });
      }
    });
  }

  release(target: ProbeTarget): void {
    this.clients.get(target.key)?.close();
    this.clients.delete(target.key);
  }

  close(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}
