const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const WHOLE = /^(?:\d+(?:ms|s|m|h))+$/;
const PART = /(\d+)(ms|s|m|h)/g;

/** Largest accepted duration: 24 days fits a 32-bit millisecond timer. */
export const MAX_DURATION_MS = 2_073_600_000;

/**
 * Parses a duration like '500ms', '1s', '5m', '3h' or a combination such as '1m30s' into milliseconds.
 * Strict: no spaces, no fractions, no bare numbers, no unknown units. Returns null when invalid.
 */
export function parseDuration(text: string): number | null {
  if (!WHOLE.test(text)) return null;
  let total = 0;
  for (const match of text.matchAll(PART)) {
    total += Number(match[1]) * (UNIT_MS[match[2] ?? ''] ?? Number.NaN);
  }
  return Number.isSafeInteger(total) && total <= MAX_DURATION_MS ? total : null;
}

/** Formats milliseconds back to the shortest exact duration string ('1500ms', '2s', '3h'). */
export function formatDuration(ms: number): string {
  if (ms > 0 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms > 0 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms > 0 && ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
