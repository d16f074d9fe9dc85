import { describe, expect, it } from 'vitest';
import {
  FASTPATH_DEFAULTS,
  FastPathSettingsError,
  parseFastPathSettings,
} from '../../agent/fastpath/settings';

describe('fast path settings', () => {
  it('defaults to off, mesh scope, a 4 MiB backpressure bound and blocking sockets excluded', () => {
    const s = parseFastPathSettings();
    expect(s).toEqual(FASTPATH_DEFAULTS);
    expect(s.enabled).toBe(false);
    expect(s.allowBlockingSockets).toBe(false);
    expect(Object.isFrozen(s)).toBe(true);
  });

  it('names the field and the reason for bad input', () => {
    expect(() => parseFastPathSettings({ scope: 'node' })).toThrow(
      /fastpath\.scope: expected 'mesh' or 'all'/,
    );
    expect(() => parseFastPathSettings({ maxQueuedBytes: -1 })).toThrow(
      /fastpath\.maxQueuedBytes: must be within/,
    );
    expect(() => parseFastPathSettings({ maxSockets: 1.5 })).toThrow(
      /fastpath\.maxSockets: expected an integer/,
    );
    expect(() => parseFastPathSettings({ enabled: 'yes' })).toThrow(
      /fastpath\.enabled: expected true or false/,
    );
    expect(() => parseFastPathSettings({ bogus: 1 } as never)).toThrow(FastPathSettingsError);
  });
});
