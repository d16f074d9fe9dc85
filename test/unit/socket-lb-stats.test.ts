import { describe, expect, it } from 'vitest';
import { mergeRounds, pairedRounds, quantile, spread, summarize } from '../../bench/socket-lb-stats';

describe('socket-LB benchmark statistics (paired rounds)', () => {
  it('interpolates quantiles between order statistics', () => {
    expect(quantile([4, 1, 3, 2], 0.5)).toBe(2.5);
    expect(quantile([1, 2, 3, 4, 5], 0.25)).toBe(2);
    expect(quantile([7], 0.99)).toBe(7);
    expect(quantile([], 0.5)).toBeNaN();
  });

  it('gives the median with its interquartile range and an order-statistic confidence interval', () => {
    const values = Array.from({ length: 30 }, (_, i) => i + 1);
    const s = spread(values);
    expect(s.median).toBe(15.5);
    expect([s.q1, s.q3]).toEqual([8.25, 22.75]);
    // n = 30: ranks round(15 - 0.98·√30) = 10 and round(16 + 0.98·√30) = 21
    expect([s.ciLow, s.ciHigh]).toEqual([10, 21]);
  });

  it('cuts aligned series into rounds, drops the warm-up round and failed pairs, and takes per-round ratios', () => {
    // round 0 (warm-up) is wild; rounds 1 and 2: b is 10% and 20% slower than a
    const a = [100, 100, 100, 10, 10, 10, 10, 10, 10];
    const b = [1, 1, 1, 11, 11, -1, 12, 12, 12];
    const set = pairedRounds(a, b, 3);
    expect(set.ratios.map((r) => Number(r.toFixed(6)))).toEqual([1.1, 1.2]);
    expect(set.diffs.map((d) => Number(d.toFixed(6)))).toEqual([1, 2]);
    expect(set.errors).toBe(1);
    expect(set.a).toEqual([10, 10, 10, 10, 10]);
    expect(set.b).toEqual([11, 11, 12, 12, 12]);
  });

  it('ignores an incomplete last round and refuses series of different lengths', () => {
    expect(pairedRounds([1, 1, 1, 1, 1], [2, 2, 2, 2, 2], 2, 0).ratios).toEqual([2, 2]);
    expect(() => pairedRounds([1, 2], [1], 1)).toThrow(/differ in length/);
    expect(() => pairedRounds([1], [1], 0)).toThrow(/roundSize/);
  });

  it('merges sessions and summarises every round of every session', () => {
    const one = pairedRounds([10, 10, 10, 10], [11, 11, 12, 12], 2, 0);
    const two = pairedRounds([20, 20], [20, 20], 2, 0);
    const summary = summarize(mergeRounds([one, two]));
    expect(summary.rounds).toBe(3);
    expect(Number(summary.ratio.median.toFixed(6))).toBe(1.1);
    expect(summary.a.p50).toBe(10);
    expect(summary.errors).toBe(0);
  });
});
