/**
 * The socket-LB datapath above the kernel: selection tables, desired state and its validation, the pure
 * diff, and the map writer over in-memory maps (the same writer code the BPF maps get), including a
 * reader that checks, after every single map operation, that connect() would see a whole backend set.
 */
import { describe, expect, it } from 'vitest';
import { bytes16ToIp, ipToBytes16 } from '../../agent/abi/ip';
import {
  BackendCodec,
  BackendStateCodec,
  BackendStatsCodec,
  isLiveMemberEntry,
  LB_SLOT_GEN_BIT,
  LB_SLOT_MEMBER_BIT,
  LB_SVC_F_MEMBERS_ARE_SLOTS,
  ServiceCodec,
  ServiceKeyCodec,
  SlotKeyCodec,
} from '../../agent/abi/lb';
import { readBackendCounters } from '../../agent/datapath/counters';
import { SocketLbDatapath } from '../../agent/datapath/datapath';
import { computeDesiredState } from '../../agent/datapath/desired-state';
import { diffDatapath } from '../../agent/datapath/diff';
import type { MemoryLbMapSet } from '../../agent/datapath/lb-maps';
import { checkAddress, LbModelError, type ServiceSpec } from '../../agent/datapath/model';
import { apportionSlots, buildSelectionTable, interleaveSlots } from '../../agent/datapath/selection-table';
import {
  LbCapacityError,
  LbSettingsError,
  lbMapMaxEntries,
  resolveLbSettings,
} from '../../agent/datapath/settings';
import { EMPTY_DATAPATH_STATE } from '../../agent/datapath/state';
import { MapDatapathWriter } from '../../agent/datapath/writer';
import { createMemoryDatapathWriter } from '../../agent/datapath/writer-memory';

const settings = resolveLbSettings({ reclaimGraceMs: 0 });

const svc = (vip: string, backends: [string, number?][], extra: Partial<ServiceSpec> = {}): ServiceSpec => ({
  vip,
  port: 80,
  backends: backends.map(([address, weight]) => ({ address, port: 8080, ...(weight ? { weight } : {}) })),
  ...extra,
});

/** What connect() would see for a VIP in these maps: the backend addresses over all live slots. */
function readLiveSet(
  maps: MemoryLbMapSet,
  vip: string,
): { slots: string[]; members: string[] } | 'refused' | undefined {
  const key = ServiceKeyCodec.encode({ addr: Buffer.from(ipBytes(vip)), port: 80, proto: 6 });
  const raw = maps.services.lookup(key);
  if (!raw) return undefined;
  const record = ServiceCodec.decode(raw);
  if (record.slot_count === 0) return 'refused';
  const half = record.generation ? LB_SLOT_GEN_BIT : 0;
  const resolve = (index: number): string => {
    const slot = maps.slots.lookup(SlotKeyCodec.encode({ service_id: record.id, index: index >>> 0 }));
    if (!slot) throw new Error(`slot ${index.toString(16)} of service ${record.id} missing`);
    const id = slot.readUInt32LE(0);
    const key4 = Buffer.alloc(4);
    key4.writeUInt32LE(id);
    const backend = maps.backends.lookup(key4);
    if (!backend) throw new Error(`backend ${id} missing`);
    const decoded = BackendCodec.decode(backend);
    if (decoded.service_id !== record.id)
      throw new Error(`backend ${id} belongs to service ${decoded.service_id}`);
    return bytes16ToIp(decoded.addr);
  };
  const slots = Array.from({ length: record.slot_count }, (_, i) => resolve(half | i));
  const memberBit = record.flags & LB_SVC_F_MEMBERS_ARE_SLOTS ? 0 : LB_SLOT_MEMBER_BIT;
  const members = Array.from({ length: record.backend_count }, (_, i) => resolve(half | memberBit | i));
  return { slots, members };
}

function ipBytes(vip: string): Buffer {
  const out = Buffer.alloc(16);
  out[10] = 0xff;
  out[11] = 0xff;
  Buffer.from(vip.split('.').map(Number)).copy(out, 12);
  return out;
}

describe('selection table', () => {
  it('keeps exact shares when the reduced weights fit', () => {
    expect(apportionSlots([1, 2, 3], 1024)).toEqual([1, 2, 3]);
    expect(apportionSlots([10, 20, 30], 1024)).toEqual([1, 2, 3]);
    expect(apportionSlots([5, 5], 1024)).toEqual([1, 1]);
  });

  it('apportions large weights to the table size within one slot of the exact share, at least one each', () => {
    const weights = [65_535, 1, 30_000, 777];
    const counts = apportionSlots(weights, 1024);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(1024);
    const total = weights.reduce((a, b) => a + b, 0);
    counts.forEach((c, i) => {
      expect(c).toBeGreaterThanOrEqual(1);
      expect(Math.abs(c - (weights[i]! * 1024) / total)).toBeLessThanOrEqual(1);
    });
  });

  it('interleaves slots smoothly and rejects bad input', () => {
    expect(interleaveSlots([1, 1, 1])).toEqual([0, 1, 2]);
    const table = buildSelectionTable([1, 3], 1024);
    expect(table.filter((m) => m === 1)).toHaveLength(3);
    expect(table).not.toEqual([1, 1, 1, 0]);
    expect(() => buildSelectionTable([1, 0], 16)).toThrow(/weights\[1\]/);
    expect(() => buildSelectionTable([1, 1, 1], 2)).toThrow(/3 members/);
    expect(buildSelectionTable([], 16)).toEqual([]);
  });
});

describe('settings and desired state', () => {
  it('validates settings by field and derives map sizes', () => {
    expect(() => resolveLbSettings({ maxServices: 0 })).toThrow(LbSettingsError);
    expect(() => resolveLbSettings({ tableSize: 70_000 })).toThrow(/lb\.tableSize/);
    const s = resolveLbSettings();
    expect(s.maxServices).toBeGreaterThanOrEqual(65_536);
    expect(s.maxBackends).toBeGreaterThanOrEqual(65_536);
    expect(lbMapMaxEntries(s).sluice_lb_backend_state_v2).toBe(s.maxBackends + 1);
  });

  it('names the bad field', () => {
    const bad = (spec: unknown, pattern: RegExp) =>
      expect(() => computeDesiredState([spec as ServiceSpec], settings)).toThrow(pattern);
    bad({ vip: '10.96.0.300', port: 80, backends: [] }, /services\[0\]\.vip/);
    bad({ vip: '10.96.0.1', port: 0, backends: [] }, /services\[0\]\.port/);
    bad({ vip: '10.96.0.1', port: 80, protocol: 'sctp', backends: [] }, /services\[0\]\.protocol/);
    bad({ vip: '10.96.0.1', port: 80, algorithm: 'maglev', backends: [] }, /services\[0\]\.algorithm/);
    bad(
      { vip: '10.96.0.1', port: 80, backends: [{ address: 'fd00::1', port: 80 }] },
      /backends\[0\]\.address: must be IPv4/,
    );
    bad(
      { vip: '10.96.0.1', port: 80, backends: [{ address: '10.0.0.1', port: 80, weight: 0 }] },
      /backends\[0\]\.weight/,
    );
    bad(
      {
        vip: '10.96.0.1',
        port: 80,
        backends: [
          { address: '10.0.0.1', port: 80 },
          { address: '10.0.0.1', port: 80 },
        ],
      },
      /backends\[1\]: duplicate/,
    );
    bad({ vip: '10.96.0.1', port: 80, ejection: { baseMs: 10, maxMs: 5 }, backends: [] }, /ejection\.maxMs/);
    expect(() => computeDesiredState([svc('10.96.0.1', []), svc('10.96.0.1', [])], settings)).toThrow(
      LbModelError,
    );
  });

  it('computes members, tables and records; draining members stay out of the table', () => {
    const desired = computeDesiredState(
      [
        {
          ...svc('10.96.0.1', [['10.0.0.2', 3], ['10.0.0.1']], { algorithm: 'weighted' }),
          backends: [
            { address: '10.0.0.2', port: 8080, weight: 3 },
            { address: '10.0.0.1', port: 8080 },
            { address: '10.0.0.3', port: 8080, state: 'draining' },
          ],
        },
        svc('::ffff:10.96.0.2', [['10.0.0.1', 5], ['10.0.0.2']]),
      ],
      settings,
    );
    const weighted = desired.get('tcp:[10.96.0.1]:80')!;
    expect(weighted.members.map((m) => m.identity)).toEqual([
      '10.0.0.1|8080',
      '10.0.0.2|8080',
      '10.0.0.3|8080',
    ]);
    expect(weighted.active).toEqual(['10.0.0.1|8080', '10.0.0.2|8080']);
    expect([...weighted.table].sort()).toEqual([0, 1, 1, 1]);
    expect(weighted.config.ejectThreshold).toBe(3);
    // random ignores weights; a v4-mapped VIP is the IPv4 service
    const random = desired.get('tcp:[10.96.0.2]:80')!;
    expect(random.table).toEqual([0, 1]);
  });
});

describe('fast paths agree with the general ones', () => {
  it('parses IPv4 without the generic parser exactly as the generic parser does', () => {
    const good = ['0.0.0.0', '10.96.0.1', '255.255.255.255', '1.2.3.4', '192.168.100.200'];
    for (const text of good) {
      const checked = checkAddress(text, 'f');
      expect(checked.text).toBe(text);
      expect(checked.v4).toBe(true);
      expect(checked.bytes.equals(ipToBytes16(text))).toBe(true);
    }
    const bad = [
      '10.96.0.256',
      '10.96.0.01',
      '010.0.0.1',
      '1.2.3',
      '1.2.3.4.5',
      '1..2.3',
      '1.2.3.',
      ' 1.2.3.4',
    ];
    for (const text of bad) expect(() => checkAddress(text, 'f')).toThrow(/f: must be an IPv4 or IPv6/);
    // not dotted quads: the generic path (IPv6, v4-mapped text printed as IPv4)
    expect(checkAddress('::ffff:10.96.0.9', 'f')).toMatchObject({ text: '10.96.0.9', v4: true });
    expect(checkAddress('FD00:0:0::1', 'f')).toMatchObject({ text: 'fd00::1', v4: false });
  });

  it('finds duplicates among many backends and shares tables between equal weight vectors', () => {
    const many = Array.from({ length: 40 }, (_, i) => ({ address: `10.0.1.${i}`, port: 80 }));
    expect(() =>
      computeDesiredState(
        [{ vip: '10.96.0.1', port: 80, backends: [...many, { address: '10.0.1.7', port: 80 }] }],
        settings,
      ),
    ).toThrow(/services\[0\]\.backends\[40\]: duplicate backend 10\.0\.1\.7 port 80/);
    const weights = (w: number[]) => w.map((weight, i) => ({ address: `10.0.2.${i}`, port: 80, weight }));
    const desired = computeDesiredState(
      [
        { vip: '10.96.0.1', port: 80, algorithm: 'weighted', backends: weights([1, 2, 3]) },
        { vip: '10.96.0.2', port: 80, algorithm: 'weighted', backends: weights([1, 2, 3]) },
        { vip: '10.96.0.3', port: 80, algorithm: 'weighted', backends: weights([3, 2, 1]) },
        { vip: '10.96.0.4', port: 80, algorithm: 'round-robin', backends: weights([1, 2, 3]) },
      ],
      settings,
    );
    const [a, b, c, d] = [...desired.values()];
    expect(a!.table).toEqual(buildSelectionTable([1, 2, 3], settings.tableSize));
    expect(b!.table).toBe(a!.table);
    expect(c!.table).toEqual(buildSelectionTable([3, 2, 1], settings.tableSize));
    expect(d!.table).toBe(a!.table);
    expect(Object.isFrozen(a!.table)).toBe(true);
  });
});

describe('diff and writer', () => {
  it('programs, then does nothing for the same input, then changes only what changed', async () => {
    const writer = createMemoryDatapathWriter({ settings });
    const dp = new SocketLbDatapath(writer, settings);
    const first = await dp.sync([
      svc('10.96.0.1', [['10.0.0.1'], ['10.0.0.2']]),
      svc('10.96.0.2', [['10.0.0.3']]),
    ]);
    expect(first.plan.summary).toMatchObject({ servicesAdded: 2, backendsAdded: 3 });
    expect(writer.maps.services.entries.size).toBe(2);
    const again = await dp.sync([
      svc('10.96.0.1', [['10.0.0.1'], ['10.0.0.2']]),
      svc('10.96.0.2', [['10.0.0.3']]),
    ]);
    expect(
      again.plan.backendWrites.length + again.plan.tableWrites.length + again.plan.serviceWrites.length,
    ).toBe(0);

    const before = writer.state.services.get('tcp:[10.96.0.1]:80')!;
    const changed = await dp.sync([
      svc('10.96.0.1', [['10.0.0.1'], ['10.0.0.4']]),
      svc('10.96.0.2', [['10.0.0.3']]),
    ]);
    const after = writer.state.services.get('tcp:[10.96.0.1]:80')!;
    expect(changed.plan.serviceWrites).toHaveLength(1);
    expect(after.id).toBe(before.id);
    expect(after.generation).toBe(1 - before.generation);
    // the kept member keeps its id (and so its ejection state and counters)
    expect(after.members.get('10.0.0.1|8080')!.id).toBe(before.members.get('10.0.0.1|8080')!.id);
    expect(changed.plan.reclaimBackendIds).toEqual([before.members.get('10.0.0.2|8080')!.id]);
    expect(readLiveSet(writer.maps, '10.96.0.1')).toEqual({
      slots: ['10.0.0.1', '10.0.0.4'],
      members: ['10.0.0.1', '10.0.0.4'],
    });
    // a config-only change rewrites the record, not the table
    const config = await dp.sync([
      svc('10.96.0.1', [['10.0.0.1'], ['10.0.0.4']], { algorithm: 'round-robin' }),
      svc('10.96.0.2', [['10.0.0.3']]),
    ]);
    expect(config.plan.tableWrites).toHaveLength(0);
    expect(config.plan.serviceWrites).toHaveLength(1);

    const removed = await dp.sync([]);
    expect(removed.plan.summary).toMatchObject({ servicesRemoved: 2, backendsRemoved: 3 });
    expect(writer.maps.services.entries.size).toBe(0);
    expect(writer.maps.backends.entries.size).toBe(0);
    expect(writer.maps.slots.entries.size).toBe(0);
  });

  it('reuses the lowest free ids and zeroes the counters of freed ones', async () => {
    const writer = createMemoryDatapathWriter({ settings });
    const dp = new SocketLbDatapath(writer, settings);
    await dp.sync([svc('10.96.0.1', [['10.0.0.1']]), svc('10.96.0.2', [['10.0.0.2']])]);
    const id = writer.state.services.get('tcp:[10.96.0.1]:80')!.members.get('10.0.0.1|8080')!.id;
    const key = Buffer.alloc(4);
    key.writeUInt32LE(id);
    // A new member's live state names its service (sockops matches sockets against it).
    const state = BackendStateCodec.decode(writer.maps.backendState.lookup(key)!);
    expect(state.service_id).toBe(writer.state.services.get('tcp:[10.96.0.1]:80')!.id);
    writer.maps.backendState.update(key, BackendStateCodec.encode({ ...state, connects: 14n, active: 2n }));
    const stats = Buffer.alloc(BackendStatsCodec.size);
    stats.writeBigUInt64LE(7n, 0);
    writer.maps.backendStats.updatePerCpu(key, [stats, stats]);
    expect(readBackendCounters(writer.maps, id).connects).toBe(14n);
    expect(readBackendCounters(writer.maps, id).connectFailures).toBe(14n);
    await dp.sync([svc('10.96.0.2', [['10.0.0.2']])]);
    expect(readBackendCounters(writer.maps, id)).toMatchObject({
      connects: 0n,
      connectFailures: 0n,
      active: 0n,
    });
    expect(BackendStateCodec.decode(writer.maps.backendState.lookup(key)!).service_id).toBe(0);
    await dp.sync([svc('10.96.0.2', [['10.0.0.2']]), svc('10.96.0.3', [['10.0.0.9']])]);
    expect(writer.state.services.get('tcp:[10.96.0.3]:80')!.id).toBe(1);
    expect(writer.state.services.get('tcp:[10.96.0.3]:80')!.members.get('10.0.0.9|8080')!.id).toBe(id);
    expect(BackendStateCodec.decode(writer.maps.backendState.lookup(key)!).service_id).toBe(1);
  });

  it('restores its state from the maps (ids, halves, tables) and reclaims orphans', async () => {
    const writer = createMemoryDatapathWriter({ settings });
    const dp = new SocketLbDatapath(writer, settings);
    await dp.sync([svc('10.96.0.1', [['10.0.0.1', 2], ['10.0.0.2']], { algorithm: 'weighted' })]);
    await dp.sync([svc('10.96.0.1', [['10.0.0.1'], ['10.0.0.2'], ['10.0.0.3']], { algorithm: 'weighted' })]);
    // a crashed writer left a backend and a table entry nobody owns
    const orphanKey = Buffer.alloc(4);
    orphanKey.writeUInt32LE(999);
    writer.maps.backends.update(
      orphanKey,
      BackendCodec.encode({
        addr: ipBytes('10.0.0.99'),
        port: 1,
        weight: 1,
        state: 1,
        flags: 0,
        service_id: 77,
      }),
    );
    writer.maps.slots.update(SlotKeyCodec.encode({ service_id: 77, index: 0 }), orphanKey);

    const restarted = new MapDatapathWriter(writer.maps, { reclaimGraceMs: 0 });
    const was = writer.state.services.get('tcp:[10.96.0.1]:80')!;
    const now = restarted.state.services.get('tcp:[10.96.0.1]:80')!;
    expect(now.id).toBe(was.id);
    expect(now.generation).toBe(was.generation);
    expect(now.slots).toEqual(was.slots);
    expect(now.activeIds).toEqual(was.activeIds);
    expect(now.otherHalf).toEqual(was.otherHalf);
    expect(now.config).toEqual(was.config);
    expect([...now.members.keys()].sort()).toEqual([...was.members.keys()].sort());
    expect(restarted.state.orphanBackendIds).toEqual([999]);
    expect(restarted.state.orphanSlots).toEqual([{ serviceId: 77, index: 0 }]);

    const dp2 = new SocketLbDatapath(restarted, settings);
    const same = await dp2.sync([
      svc('10.96.0.1', [['10.0.0.1'], ['10.0.0.2'], ['10.0.0.3']], { algorithm: 'weighted' }),
    ]);
    expect(same.plan.serviceWrites).toHaveLength(0);
    expect(same.plan.reclaimBackendIds).toEqual([999]);
    expect(writer.maps.backends.lookup(orphanKey)).toBeUndefined();
  });

  it('refuses a change past a capacity naming the setting, writing nothing', async () => {
    const small = resolveLbSettings({ maxServices: 2, maxBackends: 3, maxSlots: 8, reclaimGraceMs: 0 });
    const writer = createMemoryDatapathWriter({ settings: small });
    const dp = new SocketLbDatapath(writer, small);
    await expect(dp.sync([svc('10.96.0.1', []), svc('10.96.0.2', []), svc('10.96.0.3', [])])).rejects.toThrow(
      /lb\.maxServices/,
    );
    await expect(
      dp.sync([
        svc('10.96.0.1', [['10.0.0.1'], ['10.0.0.2']]),
        svc('10.96.0.2', [['10.0.0.3'], ['10.0.0.4']]),
      ]),
    ).rejects.toThrow(/lb\.maxBackends/);
    await expect(
      dp.sync([
        svc(
          '10.96.0.1',
          [
            ['10.0.0.1', 5],
            ['10.0.0.2', 2],
          ],
          { algorithm: 'weighted' },
        ),
      ]),
    ).rejects.toThrow(LbCapacityError);
    expect(
      writer.maps.services.entries.size + writer.maps.backends.entries.size + writer.maps.slots.entries.size,
    ).toBe(0);
    // the diff alone is pure: it throws before returning operations
    expect(() =>
      diffDatapath(
        EMPTY_DATAPATH_STATE,
        computeDesiredState(
          [
            svc(
              '10.96.0.1',
              [
                ['10.0.0.1', 5],
                ['10.0.0.2', 2],
              ],
              { algorithm: 'weighted' },
            ),
          ],
          small,
        ),
        small,
      ),
    ).toThrow(/lb\.maxSlots/);
  });

  it('updates one service on top of many without touching the others', async () => {
    const writer = createMemoryDatapathWriter({ settings });
    const dp = new SocketLbDatapath(writer, settings);
    const many = Array.from({ length: 200 }, (_, i) =>
      svc(`10.96.1.${i}`, [['10.0.0.1'], ['10.0.0.2', 2]], { algorithm: 'weighted' }),
    );
    await dp.sync(many);
    const before = writer.state;
    const changed = await dp.update({
      upsert: [svc('10.96.1.7', [['10.0.0.3']])],
      remove: [{ vip: '10.96.1.8', port: 80 }],
    });
    expect(changed.plan.serviceWrites).toHaveLength(1);
    expect(changed.plan.serviceDeletes).toHaveLength(1);
    expect(changed.plan.summary).toMatchObject({
      servicesChanged: 1,
      servicesRemoved: 1,
      backendsAdded: 1,
      backendsRemoved: 4,
    });
    expect(writer.state.services.size).toBe(199);
    expect(writer.state.services.get('tcp:[10.96.1.9]:80')).toBe(before.services.get('tcp:[10.96.1.9]:80'));
    expect(readLiveSet(writer.maps, '10.96.1.7')).toEqual({ slots: ['10.0.0.3'], members: ['10.0.0.3'] });
    expect(readLiveSet(writer.maps, '10.96.1.8')).toBeUndefined();
    // the same as a full sync of the result: nothing left to do
    const full = await dp.sync([
      ...many.filter((_, i) => i !== 7 && i !== 8),
      svc('10.96.1.7', [['10.0.0.3']]),
    ]);
    expect(
      full.plan.backendWrites.length + full.plan.tableWrites.length + full.plan.serviceWrites.length,
    ).toBe(0);
    await expect(
      dp.update({ upsert: [svc('10.96.1.7', [])], remove: [{ vip: '10.96.1.7', port: 80 }] }),
    ).rejects.toThrow(/remove\[0\]/);
  });

  it('after every single map operation, connect() sees the old backend set or the new one, whole', async () => {
    const sets: [string, number?][][] = [
      [['10.0.0.1'], ['10.0.0.2', 3]],
      [['10.0.0.3']],
      [['10.0.0.1', 2], ['10.0.0.2'], ['10.0.0.3', 5], ['10.0.0.4']],
      [],
      [['10.0.0.4', 7], ['10.0.0.1']],
      [['10.0.0.2']],
    ];
    const expected = sets.map((set) =>
      set.length === 0 ? 'refused' : [...new Set(set.map(([a]) => a))].sort().join(','),
    );
    let allowed: string[] = [];
    let checks = 0;
    const problems: string[] = [];
    const holder: { maps?: MemoryLbMapSet } = {};
    const writer = createMemoryDatapathWriter({
      settings,
      onOp: () => {
        if (!holder.maps) return;
        const seen = readLiveSetSafe(holder.maps);
        checks++;
        if (!allowed.includes(seen)) problems.push(seen);
      },
    });
    holder.maps = writer.maps;
    const readLiveSetSafe = (maps: MemoryLbMapSet): string => {
      try {
        const live = readLiveSet(maps, '10.96.0.1');
        if (live === undefined) return 'absent';
        if (live === 'refused') return 'refused';
        const slots = [...new Set(live.slots)].sort().join(',');
        const members = [...new Set(live.members)].sort().join(',');
        return slots === members ? slots : `torn ${slots} / ${members}`;
      } catch (error) {
        return `broken: ${(error as Error).message}`;
      }
    };
    const dp = new SocketLbDatapath(writer, settings);
    allowed = ['absent', expected[0]!];
    await dp.sync([svc('10.96.0.1', sets[0]!)]);
    for (let round = 1; round < 60; round++) {
      const from = (round - 1) % sets.length;
      const to = round % sets.length;
      allowed = [expected[from]!, expected[to]!];
      await dp.sync([svc('10.96.0.1', sets[to]!), svc(`10.96.1.${round}`, [['10.0.0.9']])]);
    }
    expect(checks).toBeGreaterThan(500);
    expect(problems).toEqual([]);
  });
});

describe('abi helpers', () => {
  it('tells live member-list entries apart in both table layouts', () => {
    const live = { generation: 1, flags: 0 };
    expect(isLiveMemberEntry(live, (LB_SLOT_GEN_BIT | LB_SLOT_MEMBER_BIT | 2) >>> 0)).toBe(true);
    expect(isLiveMemberEntry(live, (LB_SLOT_GEN_BIT | 2) >>> 0)).toBe(false);
    expect(isLiveMemberEntry(live, (LB_SLOT_MEMBER_BIT | 2) >>> 0)).toBe(false);
    const folded = { generation: 0, flags: LB_SVC_F_MEMBERS_ARE_SLOTS };
    expect(isLiveMemberEntry(folded, 2)).toBe(true);
    expect(isLiveMemberEntry(folded, (LB_SLOT_MEMBER_BIT | 2) >>> 0)).toBe(false);
    expect(isLiveMemberEntry(folded, (LB_SLOT_GEN_BIT | 2) >>> 0)).toBe(false);
  });
});
