import { isIP } from 'node:net';

/**
 * Validates an IP address literal and returns it normalised (IPv4 dotted quad, IPv6 lowercase compressed),
 * or null when it is not a plain IPv4/IPv6 address (zone ids, CIDR suffixes and host names are rejected).
 */
export function normaliseIp(text: string): string | null {
  if (text.includes('%') || text.includes('/')) return null;
  const family = isIP(text);
  if (family === 4) return text;
  if (family === 6) return new URL(`http://[${text}]/`).hostname.slice(1, -1);
  return null;
}

/** 4 or 6 for a normalised address. */
export function ipFamily(address: string): 4 | 6 {
  return address.includes(':') ? 6 : 4;
}

/** True for 0.0.0.0 and :: (never a valid VIP or backend). */
export function isUnspecified(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}
