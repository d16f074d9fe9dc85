/**
 * Settings of the same-node fast path, validated once, defaults in one place, result frozen.
 * See docs/fastpath.md for why the default is what it is.
 */

export type FastPathScope = 'mesh' | 'all';

/** The agent's `--fastpath` setting: off (the default), or on with a scope. */
export const FASTPATH_MODES = ['off', 'mesh', 'all'] as const;
export type FastPathMode = (typeof FASTPATH_MODES)[number];

export interface FastPathSettings {
  /** Redirect same-node traffic at all. Off by default: see docs/fastpath.md (measured trade-off). */
  readonly enabled: boolean;
  /** 'mesh': only connections to node-local mesh endpoints; 'all': any TCP pair with both ends on the node. */
  readonly scope: FastPathScope;
  /** Backpressure bound: a direction redirects only while its peer holds fewer unread bytes than this. */
  readonly maxQueuedBytes: number;
  /** A connection whose first send is larger than this stays on the normal path (0: no limit). */
  readonly maxMessageBytes: number;
  /**
   * One-way streaming policy: a side that sends more than this many times in a row while its peer stays
   * silent moves to the normal path (redirect loses to TCP for streams of small writes). 0: no limit.
   */
  readonly maxStreakMessages: number;
  /** The same in bytes (so 1 MiB request/response stays, bulk streams leave). 0: no limit. */
  readonly maxStreakBytes: number;
  /**
   * A send (as the kernel hands it to the program: up to 512 KiB of a larger write) at least this large
   * does not count toward a streak: one-way streams of large writes gain from redirect (measured with
   * 1 MiB writes), streams of 64 KiB writes lose. 0: every send counts.
   */
  readonly streakExemptBytes: number;
  /** Sockhash capacity (sockets; two per connection). A full map sends new connections the normal way. */
  readonly maxSockets: number;
  /**
   * Also take blocking sockets. This kernel returns EAGAIN to blocking reads on sockets in a sockhash
   * (tcp_bpf_recvmsg), so this exists only to demonstrate that hazard in tests. Never enable it.
   */
  readonly allowBlockingSockets: boolean;
}

export const FASTPATH_DEFAULTS: FastPathSettings = Object.freeze({
  enabled: false,
  scope: 'mesh',
  maxQueuedBytes: 4 * 1024 * 1024,
  maxMessageBytes: 0,
  maxStreakMessages: 64,
  maxStreakBytes: 2 * 1024 * 1024,
  streakExemptBytes: 256 * 1024,
  maxSockets: 65536,
  allowBlockingSockets: false,
});

export class FastPathSettingsError extends Error {
  readonly code = 'SLUICE_ERR_FASTPATH_SETTING';
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`fastpath.${field}: ${reason}`);
  }
}

function integer(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new FastPathSettingsError(field, `expected an integer, got ${JSON.stringify(value)}`);
  }
  if (value < min || value > max)
    throw new FastPathSettingsError(field, `must be within ${min}..${max}, got ${value}`);
  return value;
}

function boolean(field: string, value: unknown): boolean {
  if (typeof value !== 'boolean')
    throw new FastPathSettingsError(field, `expected true or false, got ${JSON.stringify(value)}`);
  return value;
}

/** Validates partial settings over the defaults; unknown fields are errors. */
export function parseFastPathSettings(
  input: Partial<Record<keyof FastPathSettings, unknown>> = {},
): FastPathSettings {
  const known = new Set(Object.keys(FASTPATH_DEFAULTS));
  for (const key of Object.keys(input)) {
    if (!known.has(key)) throw new FastPathSettingsError(key, 'unknown setting');
  }
  const merged = { ...FASTPATH_DEFAULTS, ...input };
  if (merged.scope !== 'mesh' && merged.scope !== 'all') {
    throw new FastPathSettingsError('scope', `expected 'mesh' or 'all', got ${JSON.stringify(merged.scope)}`);
  }
  return Object.freeze({
    enabled: boolean('enabled', merged.enabled),
    scope: merged.scope,
    // The peer's queue is a u32 in the kernel; 1 GiB is already far past any sane bound.
    maxQueuedBytes: integer('maxQueuedBytes', merged.maxQueuedBytes, 0, 1024 * 1024 * 1024),
    maxMessageBytes: integer('maxMessageBytes', merged.maxMessageBytes, 0, 0xffffffff),
    maxStreakMessages: integer('maxStreakMessages', merged.maxStreakMessages, 0, 0xffffffff),
    maxStreakBytes: integer('maxStreakBytes', merged.maxStreakBytes, 0, 0xffffffff),
    streakExemptBytes: integer('streakExemptBytes', merged.streakExemptBytes, 0, 0xffffffff),
    maxSockets: integer('maxSockets', merged.maxSockets, 2, 1 << 24),
    allowBlockingSockets: boolean('allowBlockingSockets', merged.allowBlockingSockets),
  });
}
