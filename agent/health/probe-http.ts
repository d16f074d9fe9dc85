/**
 * http probe: GET path on a fresh connection (no keep-alive, so every probe exercises accept), healthy
 * when the status is within the expected range (default 200-399). The body is discarded unread.
 */
import { request } from 'node:http';
import { connectReason, type ProbeOutcome, type Prober, type ProbeTarget } from './types';

export const DEFAULT_EXPECTED_STATUS = Object.freeze({ min: 200, max: 399 });

export class HttpProber implements Prober {
  constructor(private readonly userAgent = 'sluice-health/1') {}

  probe(target: ProbeTarget, signal: AbortSignal): Promise<ProbeOutcome> {
    const { path = '/', host, expectedStatus = DEFAULT_EXPECTED_STATUS } = target.check;
    return new Promise((resolve) => {
      if (signal.aborted) {
        resolve({ ok: false, reason: 'aborted' });
        return;
      }
      let settled = false;
      const hostHeader =
        host ??
        (target.address.includes(':')
          ? `[${target.address}]:${target.port}`
          : `${target.address}:${target.port}`);
      const req = request({
        host: target.address,
        port: target.port,
        path,
        method: 'GET',
        agent: false,
        headers: { host: hostHeader, 'user-agent': this.userAgent, connection: 'close' },
      });
      const finish = (outcome: ProbeOutcome) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        req.destroy();
        resolve(outcome);
      };
      const onAbort = () => finish({ ok: false, reason: 'aborted' });
      signal.addEventListener('abort', onAbort, { once: true });
      req.once('response', (res) => {
        const status = res.statusCode ?? 0;
        res.resume();
        finish({
          ok: status >= expectedStatus.min && status <= expectedStatus.max,
          reason: `http ${status}`,
        });
      });
      req.once('error', (err: NodeJS.ErrnoException) => {
        // Errors of the connect syscall (refused, unreachable) read as such; anything later is http's.
        if (err.syscall === 'connect') finish({ ok: false, reason: connectReason(err) });
        else finish({ ok: false, reason: `http ${err.code ?? err.message}` });
      });
      req.end();
    });
  }
}
