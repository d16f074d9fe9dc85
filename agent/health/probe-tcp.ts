/** tcp probe: healthy when a TCP connect to the backend completes; the socket is closed at once. */
import { connect } from 'node:net';
import { connectReason, type ProbeOutcome, type Prober, type ProbeTarget } from './types';

export class TcpProber implements Prober {
  probe(target: ProbeTarget, signal: AbortSignal): Promise<ProbeOutcome> {
    return new Promise((resolve) => {
      if (signal.aborted) {
        resolve({ ok: false, reason: 'aborted' });
        return;
      }
      const socket = connect({ host: target.address, port: target.port });
      const finish = (outcome: ProbeOutcome) => {
        signal.removeEventListener('abort', onAbort);
        // destroy(), not end(): no FIN handshake to wait for, the fd is freed now.
        socket.destroy();
        resolve(outcome);
      };
      const onAbort = () => finish({ ok: false, reason: 'aborted' });
      signal.addEventListener('abort', onAbort, { once: true });
      socket.once('connect', () => finish({ ok: true, reason: 'connected' }));
      socket.once('error', (err) => finish({ ok: false, reason: connectReason(err) }));
    });
  }
}
