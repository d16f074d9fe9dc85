/** Time and timers, injected so tests and the benchmark can drive them. */
export interface Clock {
  /** Milliseconds, monotonic enough for durations (performance.now() in the system clock). */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Real time. Timers are unref'd: pending grace periods or back-offs never keep a process alive. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
