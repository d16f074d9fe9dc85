import { describe, expect, it } from 'vitest';
import { array, be16, be32, bytes, defineStruct, u8, u16, u32, u64 } from '../../agent/abi/codec';
import { be32ToIpv4, bytes16ToIp, ipToBytes16, ipv4ToBe32 } from '../../agent/abi/ip';

describe('struct codec', () => {
  const Inner = defineStruct('test_inner', [
    ['a', u8],
    ['b', u32],
  ]);
  const Outer = defineStruct('test_outer', [
    ['flag', u8],
    ['count', u64],
    ['port', be16],
    ['inner', Inner],
    ['ids', array(u16, 3)],
    ['addr', bytes(4)],
    ['pad', bytes(2)],
  ]);

  it('lays fields out by C natural alignment', () => {
    expect(Inner.size).toBe(8);
    expect(Outer.fields.map((f) => [f.name, f.offset])).toEqual([
      ['flag', 0],
      ['count', 8],
      ['port', 16],
      ['inner', 20],
      ['ids', 28],
      ['addr', 34],
      ['pad', 38],
    ]);
    expect(Outer.size).toBe(40);
  });

  it('round-trips values, storing be16 in network order', () => {
    const value = {
      flag: 1,
      count: 2n ** 40n,
      port: 8080,
      inner: { a: 7, b: 0xdeadbeef },
      ids: [1, 2, 3],
      addr: Buffer.from([127, 0, 0, 1]),
    };
    const buf = Outer.encode(value);
    expect(buf.readUInt16BE(16)).toBe(8080);
    expect(Outer.decode(buf)).toEqual({ ...value, pad: Buffer.alloc(2) });
  });

  it('names the field when a value does not fit', () => {
    expect(() => Inner.encode({ a: 300, b: 0 })).toThrow(/test_inner\.a/);
    expect(() =>
      Outer.encode({
        flag: 0,
        count: 0n,
        port: 0,
        inner: { a: 0, b: 0 },
        ids: [],
        addr: Buffer.alloc(3),
      }),
    ).toThrow(/test_outer\.addr: must be a Buffer of 4 bytes/);
  });

  it('refuses to define a struct name twice', () => {
    expect(() => defineStruct('test_inner', [['x', be32]])).toThrow(/defined twice/);
  });
});

describe('ip encoding', () => {
  it('stores IPv4 as v4-mapped and prints it back plainly', () => {
    const bytes16 = ipToBytes16('10.96.0.10');
    expect(bytes16.toString('hex')).toBe('00000000000000000000ffff0a60000a');
    expect(bytes16ToIp(bytes16)).toBe('10.96.0.10');
  });

  it('handles IPv6 with compression and embedded IPv4', () => {
    expect(bytes16ToIp(ipToBytes16('fd00::10'))).toBe('fd00::10');
    expect(bytes16ToIp(ipToBytes16('2001:db8:0:1:0:0:0:1'))).toBe('2001:db8:0:1::1');
    expect(bytes16ToIp(ipToBytes16('::ffff:192.0.2.7'))).toBe('192.0.2.7');
    expect(bytes16ToIp(ipToBytes16('::1'))).toBe('::1');
  });

  it('converts IPv4 to a big-endian number and back', () => {
    expect(ipv4ToBe32('10.0.1.11')).toBe(0x0a00010b);
    expect(be32ToIpv4(0x0a00010b)).toBe('10.0.1.11');
    expect(() => ipToBytes16('10.0.1')).toThrow(/not an IP address/);
  });
});
