/**
 * Paired statistics for bench/socket-lb.ts. Two clients run alternately, operation by operation (in one
 * process, or two processes passing a token), so operation i of one and operation i of the other see
 * the same moment of a noisy machine. The samples are cut into rounds of consecutive operations; each
 * round gives one ratio (and one difference) of the two sides' medians, and the summary is the median of
 * those per-round values, over every round of every session, with their spread. Pure functions: no I/O.
 */

/** The q-quantile (0..1) of values by linear interpolation between order statistics. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((x, y) => x - y);
  const at = (s.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return s[lo]! + (s[hi]! - s[lo]!) * (at - lo);
}

export const median = (values: readonly number[]): number => quantile(values, 0.5);

export interface Spread {
  readonly median: number;
  /** interquartile range over rounds */
  readonly q1: number;
  readonly q3: number;
  /**
   * Distribution-free 95% confidence interval of the median (order statistics n/2 ± 0.98·√n, the
   * normal approximation to the binomial): where the true median lies, not where single rounds fall.
   */
  readonly ciLow: number;
  readonly ciHigh: number;
}

export function spread(values: readonly number[]): Spread {
  const s = [...values].sort((x, y) => x - y);
  const n = s.length;
  const half = 0.98 * Math.sqrt(n);
  const lowRank = Math.max(1, Math.round(n / 2 - half));
  const highRank = Math.min(n, Math.round(n / 2 + half + 1));
  return {
    median: median(s),
    q1: quantile(s, 0.25),
    q3: quantile(s, 0.75),
    ciLow: n === 0 ? Number.NaN : s[lowRank - 1]!,
    ciHigh: n === 0 ? Number.NaN : s[highRank - 1]!,
  };
}

export interface SideSummary {
  readonly p50: number;
  readonly p99: number;
}

export interface PairedSummary {
  /** rounds used (warm-ups excluded) */
  readonly rounds: number;
  readonly a: SideSummary;
  readonly b: SideSummary;
  /** per-round median(b) / median(a) */
  readonly ratio: Spread;
  /** per-round median(b) − median(a), in the samples' unit */
  readonly diff: Spread;
  /** failed operations, both sides */
  readonly errors: number;
}

/** Per-round values of one or more sessions, and the samples they came from. */
export interface RoundSet {
  readonly ratios: number[];
  readonly diffs: number[];
  readonly a: number[];
  readonly b: number[];
  readonly errors: number;
}

/**
 * Cuts two aligned sample series of one session (a[i] and b[i] ran back to back; -1 marks a failed
 * operation, whose pair is dropped) into rounds of `roundSize` pairs, discarding the first
 * `warmupRounds` rounds and an incomplete last one.
 */
export function pairedRounds(
  a: readonly number[],
  b: readonly number[],
  roundSize: number,
  warmupRounds = 1,
): RoundSet {
  if (a.length !== b.length) throw new RangeError(`series differ in length: ${a.length} vs ${b.length}`);
  if (!Number.isInteger(roundSize) || roundSize < 1) throw new RangeError(`roundSize: ${roundSize}`);
  const out: RoundSet = { ratios: [], diffs: [], a: [], b: [], errors: 0 };
  for (let i = 0; i < a.length; i++) if (a[i]! < 0 || b[i]! < 0) (out as { errors: number }).errors++;
  for (let at = warmupRounds * roundSize; at + roundSize <= a.length; at += roundSize) {
    const ra: number[] = [];
    const rb: number[] = [];
    for (let i = at; i < at + roundSize; i++) {
      if (a[i]! < 0 || b[i]! < 0) continue;
      ra.push(a[i]!);
      rb.push(b[i]!);
    }
    if (ra.length === 0) continue;
    out.ratios.push(median(rb) / median(ra));
    out.diffs.push(median(rb) - median(ra));
    out.a.push(...ra);
    out.b.push(...rb);
  }
  return out;
}

/** The sessions' rounds as one set. */
export function mergeRounds(sets: readonly RoundSet[]): RoundSet {
  return {
    ratios: sets.flatMap((s) => s.ratios),
    diffs: sets.flatMap((s) => s.diffs),
    a: sets.flatMap((s) => s.a),
    b: sets.flatMap((s) => s.b),
    errors: sets.reduce((n, s) => n + s.errors, 0),
  };
}

export function summarize(set: RoundSet): PairedSummary {
  return {
    rounds: set.ratios.length,
    a: { p50: median(set.a), p99: quantile(set.a, 0.99) },
    b: { p50: median(set.b), p99: quantile(set.b, 0.99) },
    ratio: spread(set.ratios),
    diff: spread(set.diffs),
    errors: set.errors,
  };
}
