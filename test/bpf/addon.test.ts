/**
 * The native addon against the real kernel: objects, globals, map operations, batches, per-CPU values,
 * map creation, pinning, BPF_PROG_TEST_RUN and the error paths. Test programs: test/bpf/progs.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, expect, it } from 'vitest';
import { BpfError, type BpfObject, bpf } from '../../native/index';
import { describePrivileged } from '../support/privileged';
import { useSandbox } from '../support/sandbox';

const PROGS = resolve(__dirname, '../../build/bpf-test');
const XDP_OBJ = join(PROGS, 'addon_xdp.bpf.o');
const BAD_OBJ = join(PROGS, 'addon_bad.bpf.o');

const XDP_DROP = 1;
const XDP_PASS = 2;
const XDP_TX = 3;

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: number | bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};

/** An Ethernet + IPv4 header frame (payload zero-filled). */
function ipv4Frame(length = 64): Buffer {
  const frame = Buffer.alloc(length);
  Buffer.from('020000000002', 'hex').copy(frame, 0); // destination MAC
  Buffer.from('020000000001', 'hex').copy(frame, 6); // source MAC
  frame.writeUInt16BE(0x0800, 12);
  frame[14] = 0x45;
  return frame;
}

/** Calls fn and returns what it threw (fails the test when it does not throw). */
function thrown(fn: () => unknown): BpfError {
  try {
    fn();
  } catch (error) {
    return error as BpfError;
  }
  throw new Error('expected a throw');
}

describePrivileged('native addon: objects, maps and test runs', () => {
  const sandbox = useSandbox('addon');
  const objects: BpfObject[] = [];
  const load = (...args: Parameters<typeof bpf.loadObject>): BpfObject => {
    const obj = bpf.loadObject(...args);
    objects.push(obj);
    return obj;
  };
  afterEach(() => {
    for (const obj of objects.splice(0)) obj.close();
  });

  it('loads an object, lists programs and maps, and applies globals and map sizes before load', () => {
    const obj = load(XDP_OBJ, {
      globals: { xdp_verdict: u32(XDP_DROP), count_step: u64(5) },
      mapMaxEntries: { addon_big: 100_000 },
    });
    expect(obj.programs().map((p) => p.name)).toEqual(['addon_xdp_count', 'addon_xdp_swap']);
    const info = obj.program('addon_xdp_count').info();
    expect(info).toMatchObject({ name: 'addon_xdp_count', type: 'xdp', section: 'xdp' });
    expect(info.id).toBeGreaterThan(0);
    expect(info.tag).toMatch(/^[0-9a-f]{16}$/);
    expect(obj.maps().map((m) => m.name)).toEqual(
      expect.arrayContaining(['addon_xdp_counts', 'addon_big', 'addon_small', 'addon_pinned']),
    );
    expect(obj.map('addon_big').info()).toMatchObject({
      type: 'hash',
      keySize: 4,
      valueSize: 8,
      maxEntries: 100_000,
    });
    expect(obj.map('addon_small').info().maxEntries).toBe(4);
    expect(obj.map('addon_xdp_counts').info()).toMatchObject({ type: 'percpu_array', maxEntries: 4 });
    expect(obj.map('addon_big').info().btfValueTypeId).toBeGreaterThan(0);

    // The verdict and the counter step come from the globals set before load.
    const run = obj.program('addon_xdp_count').testRun({ data: ipv4Frame(), repeat: 10 });
    expect(run.retval).toBe(XDP_DROP);
    expect(run.durationNs).toBeGreaterThanOrEqual(0);
    const perCpu = (slot: number): bigint =>
      obj
        .map('addon_xdp_counts')
        .lookupPerCpu(u32(slot))!
        .reduce((sum, value) => sum + value.readBigUInt64LE(0), 0n);
    expect(perCpu(0)).toBe(50n);
    expect(perCpu(1)).toBe(50n);
    expect(perCpu(2)).toBe(0n);

    const defaults = load(XDP_OBJ);
    expect(defaults.program('addon_xdp_count').testRun({ data: ipv4Frame() }).retval).toBe(XDP_PASS);
    expect(defaults.map('addon_big').info().maxEntries).toBe(1024);
  });

  it('test-runs XDP on a crafted packet and returns the data out', () => {
    const obj = load(XDP_OBJ);
    const frame = ipv4Frame(80);
    frame.fill(0xab, 34);
    const run = obj.program('addon_xdp_swap').testRun({ data: frame });
    expect(run.retval).toBe(XDP_TX);
    expect(run.dataOut.length).toBe(80);
    expect(run.dataOut.subarray(0, 6)).toEqual(frame.subarray(6, 12));
    expect(run.dataOut.subarray(6, 12)).toEqual(frame.subarray(0, 6));
    expect(run.dataOut.subarray(12)).toEqual(frame.subarray(12));
    // A struct xdp_md context goes in and comes back out; the kernel checks it (no egress_ifindex).
    const ctx = Buffer.alloc(24);
    ctx.writeUInt32LE(frame.length, 4); // data_end
    const withCtx = obj.program('addon_xdp_swap').testRun({ data: frame, ctx, repeat: 3 });
    expect(withCtx.retval).toBe(XDP_TX);
    expect(withCtx.ctxOut?.readUInt32LE(4)).toBe(frame.length);
    ctx.writeUInt32LE(1, 20); // egress_ifindex
    expect(thrown(() => obj.program('addon_xdp_swap').testRun({ data: frame, ctx }))).toMatchObject({
      code: 'EINVAL',
    });
    // The kernel refuses XDP test data shorter than an Ethernet header.
    expect(thrown(() => obj.program('addon_xdp_swap').testRun({ data: Buffer.alloc(13) }))).toMatchObject({
      code: 'EINVAL',
      op: 'bpf_prog_test_run_opts',
    });
  });

  it('looks up, updates with flags, deletes and iterates map keys', () => {
    const map = load(XDP_OBJ).map('addon_big');
    expect(map.lookup(u32(1))).toBeUndefined();
    map.update(u32(1), u64(100));
    map.update(u32(2), u64(200), 'noexist');
    expect(map.lookup(u32(1))?.readBigUInt64LE(0)).toBe(100n);
    expect(thrown(() => map.update(u32(2), u64(1), 'noexist'))).toMatchObject({ code: 'EEXIST', errno: 17 });
    expect(thrown(() => map.update(u32(3), u64(1), 'exist'))).toMatchObject({
      code: 'ENOENT',
      op: 'bpf_map_update_elem',
    });
    map.update(u32(2), u64(222), 'exist');
    expect(map.lookup(u32(2))?.readBigUInt64LE(0)).toBe(222n);
    expect(
      map
        .keys()
        .map((k) => k.readUInt32LE(0))
        .sort(),
    ).toEqual([1, 2]);
    expect(map.delete(u32(1))).toBe(true);
    expect(map.delete(u32(1))).toBe(false);
    expect(map.keys().map((k) => k.readUInt32LE(0))).toEqual([2]);
  });

  it('checks argument sizes and flags at the boundary with a clear error', () => {
    const map = load(XDP_OBJ).map('addon_big');
    const short = thrown(() => map.update(Buffer.alloc(3), u64(1)));
    expect(short).toBeInstanceOf(TypeError);
    expect(short).toMatchObject({ code: 'EINVAL', op: 'bpf_map_update_elem' });
    expect(short.message).toMatch(/key must be 4 bytes.*got 3/);
    expect(thrown(() => map.update(u32(1), Buffer.alloc(4))).message).toMatch(/value must be 8 bytes.*got 4/);
    expect(thrown(() => map.lookup('x' as unknown as Buffer)).message).toMatch(/key must be a Buffer/);
    // Batches are packed: each Buffer must hold exactly `count` records of the map's sizes.
    expect(thrown(() => map.updateBatch(Buffer.alloc(6), Buffer.alloc(16), 2)).message).toMatch(
      /keys must be 2 x 4 = 8 bytes, got 6/,
    );
    expect(thrown(() => map.updateBatch(u32(1), 'x' as unknown as Buffer, 1)).message).toMatch(
      /values must be a Buffer/,
    );
    expect(thrown(() => map.update(u32(1), u64(1), 'sometimes' as 'any')).message).toMatch(/flag must be/);
    expect(thrown(() => map.updateBatch(u32(1), Buffer.concat([u64(1), u64(2)]), 1)).message).toMatch(
      /values must be 1 x 8 = 8 bytes, got 16/,
    );
    expect(thrown(() => map.updateBatch(u32(1), u64(1), -1)).message).toMatch(/count must be an integer/);
    expect(thrown(() => map.deleteBatch(Buffer.alloc(5), 1)).message).toMatch(/keys must be 1 x 4 = 4 bytes/);
  });

  it('reads and writes per-CPU values one per possible CPU', () => {
    const map = load(XDP_OBJ).map('addon_xdp_counts');
    const cpus = bpf.possibleCpus();
    expect(cpus).toBeGreaterThan(0);
    const values = Array.from({ length: cpus }, (_, cpu) => u64(1000 + cpu));
    map.updatePerCpu(u32(3), values);
    const read = map.lookupPerCpu(u32(3))!;
    expect(read.map((v) => v.readBigUInt64LE(0))).toEqual(values.map((v) => v.readBigUInt64LE(0)));
    expect(thrown(() => map.lookup(u32(3))).message).toMatch(/per-CPU: use lookupPerCpu/);
    expect(thrown(() => map.updatePerCpu(u32(3), values.slice(1))).message).toMatch(
      /one Buffer per possible CPU/,
    );
  });

  it('batch-updates 100 000 entries and reads them back, then batch-deletes', () => {
    const count = 100_000;
    const map = load(XDP_OBJ, { mapMaxEntries: { addon_big: count } }).map('addon_big');
    const keys = Array.from({ length: count }, (_, i) => u32(i * 7 + 1));
    const values = Array.from({ length: count }, (_, i) => u64(BigInt(i) * 1_000_003n));
    map.updateBatch(Buffer.concat(keys), Buffer.concat(values), count);

    const { keys: readKeys, values: readValues } = map.lookupBatch();
    expect(readKeys).toHaveLength(count);
    const seen = new Map<number, bigint>();
    readKeys.forEach((key, i) => {
      seen.set(key.readUInt32LE(0), readValues[i]!.readBigUInt64LE(0));
    });
    expect(seen.size).toBe(count);
    for (let i = 0; i < count; i += 997) expect(seen.get(i * 7 + 1)).toBe(BigInt(i) * 1_000_003n);
    expect(seen.get((count - 1) * 7 + 1)).toBe(BigInt(count - 1) * 1_000_003n);
    expect(map.lookup(u32(7 * 500 + 1))?.readBigUInt64LE(0)).toBe(500n * 1_000_003n);

    // The first half, plus two keys that are not there (skipped, not counted).
    const doomed = [...keys.slice(0, count / 2), u32(2), u32(3)];
    expect(map.deleteBatch(Buffer.concat(doomed), doomed.length)).toBe(count / 2);
    expect(map.lookupBatch().keys).toHaveLength(count / 2);
    expect(map.keys()).toHaveLength(count / 2);
    // A second batch overwrites present keys.
    const last = keys[count - 1]!;
    map.updateBatch(Buffer.concat([last, u32(2)]), Buffer.concat([u64(42), u64(43)]), 2);
    expect(map.lookup(last)?.readBigUInt64LE(0)).toBe(42n);
    expect(map.lookup(u32(2))?.readBigUInt64LE(0)).toBe(43n);
  });

  it('batch-reads arrays and per-CPU hashes, and says when a map type has no batch operations', () => {
    const array = bpf.createMap({
      type: 'array',
      name: 'addon_arr',
      keySize: 4,
      valueSize: 4,
      maxEntries: 10,
    });
    const perCpu = bpf.createMap({
      type: 'percpu_hash',
      name: 'addon_pch',
      keySize: 4,
      valueSize: 4,
      maxEntries: 8,
    });
    const sockhash = bpf.createMap({
      type: 'sockhash',
      name: 'addon_sh',
      keySize: 4,
      valueSize: 4,
      maxEntries: 8,
    });
    try {
      array.update(u32(3), u32(0xdeadbeef));
      const fromArray = array.lookupBatch();
      expect(fromArray.keys.map((k) => k.readUInt32LE(0))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      expect(fromArray.values[3]?.readUInt32LE(0)).toBe(0xdeadbeef);

      const cpus = bpf.possibleCpus();
      perCpu.updatePerCpu(
        u32(5),
        Array.from({ length: cpus }, (_, cpu) => u32(cpu + 1)),
      );
      const fromPerCpu = perCpu.lookupBatch();
      expect(fromPerCpu.keys).toHaveLength(1);
      // Each value holds every CPU's value, 8-byte aligned.
      expect(fromPerCpu.values[0]).toHaveLength(8 * cpus);
      expect(fromPerCpu.values[0]?.readUInt32LE(8 * (cpus - 1))).toBe(cpus);

      expect(thrown(() => sockhash.lookupBatch())).toMatchObject({
        code: 'ENOTSUPP',
        op: 'bpf_map_lookup_batch',
      });
      expect(sockhash.keys()).toEqual([]);
    } finally {
      for (const map of [array, perCpu, sockhash]) map.close();
    }
  });

  it('creates maps, including a map-in-map with an inner template', () => {
    const inner = bpf.createMap({
      type: 'array',
      name: 'addon_inner',
      keySize: 4,
      valueSize: 8,
      maxEntries: 2,
    });
    const outer = bpf.createMap({
      type: 'array_of_maps',
      name: 'addon_outer',
      keySize: 4,
      valueSize: 4,
      maxEntries: 4,
      innerMap: inner,
    });
    try {
      expect(inner.info()).toMatchObject({ type: 'array', name: 'addon_inner', maxEntries: 2 });
      expect(outer.info()).toMatchObject({ type: 'array_of_maps', keySize: 4, valueSize: 4 });
      outer.update(u32(1), u32(inner.fd));
      // Reading an outer map returns the inner map's id.
      expect(outer.lookup(u32(1))?.readUInt32LE(0)).toBe(inner.info().id);
      expect(
        thrown(() => bpf.createMap({ type: 'nope', name: 'x', keySize: 4, valueSize: 4, maxEntries: 1 }))
          .message,
      ).toMatch(/type 'nope' is not a known map type/);
      expect(bpf.mapTypes()).toContain('sockhash');
    } finally {
      outer.close();
      inner.close();
    }
  });

  it('reuses maps pinned by name when an object is loaded a second time', () => {
    const pinRoot = sandbox().bpffsDir;
    const first = load(XDP_OBJ, { pinRoot });
    expect(existsSync(join(pinRoot, 'addon_pinned'))).toBe(true);
    first.map('addon_pinned').update(u32(9), u64(99));
    const second = load(XDP_OBJ, { pinRoot });
    expect(second.map('addon_pinned').info().id).toBe(first.map('addon_pinned').info().id);
    expect(second.map('addon_pinned').lookup(u32(9))?.readBigUInt64LE(0)).toBe(99n);
    // Unpinned maps are not shared.
    expect(second.map('addon_big').info().id).not.toBe(first.map('addon_big').info().id);
    // Without a pin root nothing is pinned (not even in /sys/fs/bpf) and nothing is shared.
    const unpinned = load(XDP_OBJ);
    expect(unpinned.map('addon_pinned').info().id).not.toBe(first.map('addon_pinned').info().id);
    expect(load(XDP_OBJ).map('addon_pinned').info().id).not.toBe(unpinned.map('addon_pinned').info().id);
    expect(existsSync('/sys/fs/bpf/addon_pinned')).toBe(false);
    const reopened = bpf.openPinnedMap(join(pinRoot, 'addon_pinned'));
    try {
      expect(reopened.info().id).toBe(first.map('addon_pinned').info().id);
      expect(reopened.lookup(u32(9))?.readBigUInt64LE(0)).toBe(99n);
    } finally {
      reopened.close();
    }
  });

  it('pins a map and a program explicitly and reopens them', () => {
    const obj = load(XDP_OBJ);
    const dir = sandbox().bpffsDir;
    obj.map('addon_small').pin(join(dir, 'small'));
    obj.program('addon_xdp_swap').pin(join(dir, 'swap'));
    const prog = bpf.openPinnedProgram(join(dir, 'swap'));
    try {
      expect(prog.info()).toMatchObject({ id: obj.program('addon_xdp_swap').info().id, type: 'xdp' });
      expect(prog.testRun({ data: ipv4Frame() }).retval).toBe(XDP_TX);
    } finally {
      prog.close?.();
    }
    expect(thrown(() => bpf.openPinnedProgram(join(dir, 'small')))).toMatchObject({ code: 'EINVAL' });
  });

  it('rejects a program with the verifier log in the error', () => {
    const error = thrown(() => bpf.loadObject(BAD_OBJ));
    expect(error).toBeInstanceOf(BpfError);
    expect(['EACCES', 'EINVAL']).toContain(error.code);
    expect(error.op).toBe('bpf_object__load');
    expect(error.log).toMatch(/invalid access to packet/);
    expect(error.log).toMatch(/processed \d+ insns/);
  });

  it('fails with E2BIG on a full map, ENOENT on a missing pin, file or name', () => {
    const obj = load(XDP_OBJ);
    const small = obj.map('addon_small');
    for (let i = 0; i < 4; i++) small.update(u32(i), u64(i));
    expect(thrown(() => small.update(u32(4), u64(4)))).toMatchObject({
      code: 'E2BIG',
      errno: 7,
      op: 'bpf_map_update_elem',
    });
    // Replacing an existing entry of a full map still works.
    small.update(u32(3), u64(33));

    const pin = thrown(() => bpf.openPinnedMap(join(sandbox().bpffsDir, 'missing')));
    expect(pin).toBeInstanceOf(BpfError);
    expect(pin).toMatchObject({ code: 'ENOENT', errno: 2, op: 'bpf_obj_get' });
    expect(thrown(() => bpf.openPinnedLink(join(sandbox().bpffsDir, 'missing')))).toMatchObject({
      code: 'ENOENT',
    });
    expect(thrown(() => bpf.loadObject(join(PROGS, 'missing.bpf.o')))).toMatchObject({ code: 'ENOENT' });
    expect(thrown(() => obj.map('missing')).message).toMatch(/no map named 'missing'/);
    expect(thrown(() => load(XDP_OBJ, { globals: { nope: u32(1) } })).message).toMatch(
      /no global variable named 'nope'/,
    );
    expect(thrown(() => load(XDP_OBJ, { globals: { xdp_verdict: u64(1) } })).message).toMatch(
      /globals.xdp_verdict must be 4 bytes, got 8/,
    );
    expect(thrown(() => load(XDP_OBJ, { mapMaxEntries: { nope: 1 } })).message).toMatch(
      /no map named 'nope'/,
    );
  });

  it('leaves programs out with skipPrograms', () => {
    const obj = load(XDP_OBJ, { skipPrograms: ['addon_xdp_swap'] });
    expect(obj.programs().map((p) => p.name)).toEqual(['addon_xdp_count']);
    expect(thrown(() => obj.program('addon_xdp_swap')).code).toBe('ENOENT');
  });

  it('shows its programs and BTF-typed maps to bpftool', () => {
    const obj = load(XDP_OBJ);
    const progId = obj.program('addon_xdp_count').info().id;
    const prog = JSON.parse(
      execFileSync('bpftool', ['-j', 'prog', 'show', 'id', String(progId)], { encoding: 'utf8' }),
    );
    expect(prog).toMatchObject({ id: progId, type: 'xdp', name: 'addon_xdp_count' });
    const mapId = obj.map('addon_big').info().id;
    const map = JSON.parse(
      execFileSync('bpftool', ['-j', 'map', 'show', 'id', String(mapId)], { encoding: 'utf8' }),
    );
    expect(map).toMatchObject({ id: mapId, type: 'hash', name: 'addon_big' });
    expect(map.btf_id).toBeGreaterThan(0);
    obj.map('addon_big').update(u32(7), u64(77));
    const dump = execFileSync('bpftool', ['map', 'dump', 'id', String(mapId)], { encoding: 'utf8' });
    // With BTF, bpftool prints typed values rather than raw bytes.
    expect(dump).toMatch(/"key": 7,\s*"value": 77/);
  });
});

describePrivileged('native addon: fd hygiene', () => {
  const fdCount = (): number => readdirSync('/proc/self/fd').length;

  it('returns to the baseline fd count after loading and closing objects many times', () => {
    // Warm up once (lazy loads of the addon and libbpf's own one-time probes).
    bpf.loadObject(XDP_OBJ).close();
    const baseline = fdCount();
    const deadline = Date.now() + 20_000;
    for (let i = 0; i < 40 && Date.now() < deadline; i++) {
      const obj = bpf.loadObject(XDP_OBJ, { mapMaxEntries: { addon_big: 64 } });
      obj.map('addon_big').update(u32(i), u64(i));
      obj.program('addon_xdp_count').testRun({ data: ipv4Frame() });
      const map = bpf.createMap({ type: 'hash', name: 'addon_tmp', keySize: 4, valueSize: 4, maxEntries: 4 });
      map.close();
      map.close(); // idempotent
      expect(() => bpf.loadObject(BAD_OBJ)).toThrow(BpfError);
      expect(() => bpf.openPinnedMap('/sys/fs/bpf/addon-definitely-missing')).toThrow(BpfError);
      obj.close();
    }
    expect(fdCount()).toBe(baseline);
  });

  it('releases the fds of handles that are dropped without close() when they are garbage collected', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const collect = async (): Promise<void> => {
      for (let round = 0; round < 4; round++) {
        gc();
        await new Promise((r) => setImmediate(r));
      }
    };
    await collect();
    const baseline = fdCount();
    (() => {
      for (let i = 0; i < 20; i++)
        bpf.createMap({ type: 'array', name: 'addon_gc', keySize: 4, valueSize: 4, maxEntries: 1 });
    })();
    expect(fdCount()).toBe(baseline + 20);
    await collect();
    expect(fdCount()).toBe(baseline);
  });

  it('refuses to use a closed handle', () => {
    const map = bpf.createMap({
      type: 'hash',
      name: 'addon_closed',
      keySize: 4,
      valueSize: 4,
      maxEntries: 4,
    });
    map.close();
    expect(thrown(() => map.lookup(u32(1)))).toMatchObject({ code: 'EBADF' });
    const obj = bpf.loadObject(XDP_OBJ);
    const prog = obj.program('addon_xdp_count');
    obj.close();
    expect(thrown(() => prog.testRun({ data: ipv4Frame() }))).toMatchObject({ code: 'EBADF' });
    expect(thrown(() => obj.programs())).toMatchObject({ code: 'EBADF' });
  });
});
