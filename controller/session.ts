import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { VersionedDelta } from './diff';
import type {
  ControllerMessage,
  Malformed,
  WireBackendRef,
  WireDelta,
  WireHello,
  WireService,
} from './protocol';
import { AgentQueue } from './queue';
import type { CatalogStore, StoreChange } from './store';

export type SyncCall = grpc.ServerDuplexStream<unknown, ControllerMessage>;

/** What a session needs from the server around it. */
export interface SessionHost {
  readonly store: CatalogStore;
  readonly logger: Logger;
  readonly maxQueueServices: number;
  /** Versions sent but not yet ACKed/NACKed before further changes are held back and coalesced. */
  readonly maxInFlight: number;
  now(): number;
  onSent(session: AgentSession, kind: 'snapshot' | 'delta'): void;
  onCoalesced(session: AgentSession, overflowed: boolean): void;
  onAck(session: AgentSession, version: number): void;
  onNack(session: AgentSession, version: number, reason: string): void;
}

/**
 * One agent's Sync stream after its Hello. Owns the agent's bounded queue and tracks what was sent and what
 * the agent applied. Concurrency contract: the server calls push() for every catalog change in version
 * order; push never blocks. When the agent keeps up (the stream is writable and fewer than maxInFlight
 * versions await its ACK) the change is written at once (the shared message object, so it is encoded once
 * for all agents); otherwise it is coalesced into the single pending item, written on 'drain' or on the
 * next ACK. After a NACK the session stops sending until the next change, which it sends as a
 * delta from the last ACKed version (the agent kept that state).
 */
export class AgentSession {
  readonly connectedAt = Date.now();
  ackedVersion = 0;
  sentVersion = 0;
  lastNack: { version: number; reason: string } | null = null;
  private diverged = false;
  private writable = true;
  /** Versions written and not yet answered, oldest first. */
  private readonly inFlight: number[] = [];
  private closed = false;
  private pendingProbes: readonly WireBackendRef[] | null = null;
  readonly queue: AgentQueue<WireService>;

  constructor(
    readonly node: string,
    readonly zone: string,
    readonly call: SyncCall,
    private readonly host: SessionHost,
  ) {
    this.queue = new AgentQueue(host.maxQueueServices);
    call.on('drain', () => {
      this.writable = true;
      this.flush();
    });
  }

  get lag(): number {
    return Math.max(0, this.host.store.version - this.ackedVersion);
  }

  /** First message after the Hello: the difference from what the agent says it has, or a snapshot. */
  start(hello: WireHello): 'snapshot' | 'delta' {
    const store = this.host.store;
    let delta: WireDelta | null = null;
    if (hello.epoch === store.epoch && hello.version > 0) {
      delta = store.deltaSince(hello.version);
      if (delta) this.ackedVersion = hello.version;
    }
    if (!delta && hello.services.length > 0) {
      delta = store.deltaFromRevisions(
        hello.version,
        new Map(hello.services.map((s) => [s.key, s.revision])),
      );
    }
    if (delta) {
      this.sentVersion = delta.baseVersion;
      this.queue.push(delta);
    } else {
      this.queue.pushSnapshot();
    }
    this.flush();
    return delta ? 'delta' : 'snapshot';
  }

  /** A new catalog version. Never blocks. */
  push(change: StoreChange): void {
    if (this.closed) return;
    if (this.diverged) {
      this.diverged = false;
      this.queue.take();
      const delta = this.host.store.deltaSince(this.ackedVersion);
      this.sentVersion = this.ackedVersion;
      if (delta) this.queue.push(delta);
      else this.queue.pushSnapshot();
      this.flush();
      return;
    }
    const pending = this.queue.pending;
    if (pending === null && this.canWrite() && this.sentVersion === change.delta.baseVersion) {
      this.write(change.message, 'delta', change.version);
      return;
    }
    const tip =
      pending?.kind === 'delta' ? pending.delta.version : pending === null ? this.sentVersion : null;
    if (tip === null) return; // a snapshot is pending: it is built when sent, so it includes this change
    if (tip === change.delta.baseVersion) {
      const before = this.queue.overflows;
      if (pending !== null) this.host.onCoalesced(this, false);
      this.queue.push(change.delta);
      if (this.queue.overflows !== before) this.host.onCoalesced(this, true);
    } else {
      // Should not happen (changes arrive in order); resynchronise rather than send a broken chain.
      this.host.logger.warn(
        { node: this.node, tip, base: change.delta.baseVersion },
        'delta chain broken, resyncing',
      );
      this.queue.pushSnapshot();
    }
    this.flush();
  }

  /** Sends a probe assignment (the newest one wins if the stream is blocked). */
  sendProbes(backends: readonly WireBackendRef[]): void {
    if (this.closed) return;
    this.pendingProbes = backends;
    this.flush();
  }

  ack(version: number): string | null {
    if (version > this.sentVersion)
      return `ack for version ${version}, but the last version sent is ${this.sentVersion}`;
    if (version <= this.ackedVersion) return null; // a duplicate: harmless
    this.ackedVersion = version;
    this.answered(version);
    this.host.onAck(this, version);
    this.flush();
    return null;
  }

  nack(version: number, reason: string): string | null {
    if (version > this.sentVersion)
      return `nack for version ${version}, but the last version sent is ${this.sentVersion}`;
    this.lastNack = { version, reason };
    // The agent drops every delta sent after the rejected one (their base is a state it does not have),
    // so none of them will be answered: nothing is in flight any more.
    this.inFlight.length = 0;
    this.diverged = true;
    this.queue.take();
    this.host.onNack(this, version, reason);
    return null;
  }

  close(): void {
    this.closed = true;
    this.queue.take();
  }

  private answered(version: number): void {
    while (this.inFlight.length > 0 && this.inFlight[0]! <= version) this.inFlight.shift();
  }

  private canWrite(): boolean {
    return this.writable && this.inFlight.length < this.host.maxInFlight;
  }

  private flush(): void {
    while (this.writable && !this.closed) {
      const item = this.canWrite() ? this.queue.take() : null;
      if (item !== null) {
        if (item.kind === 'snapshot') {
          const message = this.host.store.snapshotMessage();
          this.write(message, 'snapshot', this.host.store.version);
        } else {
          const d = item.delta as VersionedDelta<WireService>;
          const store = this.host.store;
          const delta: WireDelta = {
            epoch: store.epoch,
            domain: store.domain,
            version: d.version,
            baseVersion: d.baseVersion,
            upserts: d.upserts,
            deletes: d.deletes,
          };
          this.write({ delta }, 'delta', d.version);
        }
        continue;
      }
      if (this.pendingProbes !== null) {
        const backends = this.pendingProbes;
        this.pendingProbes = null;
        this.writable = this.call.write({ probes: { backends } });
        continue;
      }
      break;
    }
  }

  private write(message: ControllerMessage, kind: 'snapshot' | 'delta', version: number): void {
    this.sentVersion = version;
    this.inFlight.push(version);
    this.writable = this.call.write(message);
    this.host.onSent(this, kind);
  }
}

export function isMalformed(message: unknown): message is Malformed {
  return typeof message === 'object' && message !== null && 'malformed' in message;
}
