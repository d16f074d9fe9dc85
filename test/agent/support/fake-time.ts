import type { Clock, TimerHandle, Timers } from '../../../agent/health/types';

/** A manual clock and timer queue for scheduling logic: advance() fires due timers in time order. */
export class FakeTime implements Clock, Timers {
  private current = 0;
  /** Timer callbacks fired so far: each one is a separate event-loop turn. */
  fired = 0;
  private seq = 0;
  private readonly pending = new Map<number, { at: number; seq: number; fn: () => void }>();

  now(): number {
    return this.current;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq;
    this.pending.set(id, { at: this.current + ms, seq: id, fn });
    return { id } as TimerHandle;
  }

  clearTimeout(handle: TimerHandle): void {
    this.pending.delete((handle as { id: number }).id);
  }

  get timerCount(): number {
    return this.pending.size;
  }

  /** Moves time forward by ms, firing timers in order and letting promise callbacks run in between. */
  async advance(ms: number): Promise<void> {
    const end = this.current + ms;
    for (;;) {
      await flushMicrotasks();
      let next: [number, { at: number; seq: number; fn: () => void }] | undefined;
      for (const item of this.pending) {
        if (
          item[1].at <= end &&
          (!next || item[1].at < next[1].at || (item[1].at === next[1].at && item[1].seq < next[1].seq))
        ) {
          next = item;
        }
      }
      if (!next) break;
      this.pending.delete(next[0]);
      this.current = Math.max(this.current, next[1].at);
      this.fired++;
      next[1].fn();
    }
    this.current = end;
    await flushMicrotasks();
  }
}

export async function flushMicrotasks(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}
