/**
 * Address encodings shared by every map: a 16-byte address field holds IPv6 as is and IPv4 as the
 * v4-mapped form ::ffff:a.b.c.d, so one key type serves both families and v4-mapped v6 sockets match
 * IPv4 services without a second lookup.
 */
import { isIPv4, isIPv6 } from 'node:net';

const V4_MAPPED_PREFIX = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

export function ipv4ToBytes(address: string): Buffer {
  if (!isIPv4(address)) throw new TypeError(`${address}: not an IPv4 address`);
  return Buffer.from(address.split('.').map(Number));
}

/** The IPv4 address as a host number whose big-endian bytes are the address (for `__be32` fields). */
export function ipv4ToBe32(address: string): number {
  return ipv4ToBytes(address).readUInt32BE(0);
}

export function be32ToIpv4(value: number): string {
  const buf = Buffer.alloc(4);
  buf.writeUInt32BE(value >>> 0);
  return [...buf].join('.');
}

function ipv6ToBytes(address: string): Buffer {
  let text = address;
  const out = Buffer.alloc(16);
  // A trailing dotted quad (::ffff:1.2.3.4) becomes two groups.
  const dotted = text.match(/(\d+\.\d+\.\d+\.\d+)$/);
  if (dotted?.[1]) {
    const v4 = ipv4ToBytes(dotted[1]);
    text = `${text.slice(0, -dotted[1].length)}${v4.readUInt16BE(0).toString(16)}:${v4.readUInt16BE(2).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headGroups = head ? head.split(':') : [];
  const tailGroups = tail ? tail.split(':') : [];
  const groups =
    tail === undefined
      ? headGroups
      : [...headGroups, ...Array(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  groups.forEach((group, i) => {
    out.writeUInt16BE(Number.parseInt(group, 16), i * 2);
  });
  return out;
}

/** Any IP address as 16 bytes (IPv4 as v4-mapped). */
export function ipToBytes16(address: string): Buffer {
  if (isIPv4(address)) return Buffer.concat([V4_MAPPED_PREFIX, ipv4ToBytes(address)]);
  if (isIPv6(address)) return ipv6ToBytes(address);
  throw new TypeError(`${address}: not an IP address`);
}

/** 16 address bytes back to text: v4-mapped addresses print as plain IPv4. */
export function bytes16ToIp(bytes: Buffer): string {
  if (bytes.length !== 16) throw new RangeError(`address must be 16 bytes, got ${bytes.length}`);
  if (bytes.subarray(0, 12).equals(V4_MAPPED_PREFIX)) return [...bytes.subarray(12)].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  // Compress the longest run of zero groups, as RFC 5952 asks.
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLength && j - i > 1) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLength).join(':')}`;
}

export function isIpv4Mapped(bytes: Buffer): boolean {
  return bytes.length === 16 && bytes.subarray(0, 12).equals(V4_MAPPED_PREFIX);
}
