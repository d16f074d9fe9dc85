import { z } from 'zod';
import { normaliseIp } from './address';
import { parseDuration } from './duration';

/**
 * The file format's shape (zod). Field-level rules live here with their exact messages; rules that span
 * fields (duplicates, timeout <= interval, port names) are checked in parse.ts. Defaults are NOT applied
 * here: parse.ts fills them from defaults.ts so they live in one place.
 */

type Issue = { readonly input?: unknown };
const required = (message: string) => (iss: Issue) => (iss.input === undefined ? 'is required' : message);

export const DNS_LABEL = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
const NAMESPACE_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/;
const NODE_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const ZONE = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

export const MESSAGES = Object.freeze({
  label:
    "must be a DNS label: lowercase letters, digits and '-', starting with a letter, at most 63 characters",
  namespace:
    "must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
  domain: 'must be a DNS domain of lowercase labels separated by dots, such as mesh.local',
  node: 'must be a node name: lowercase DNS labels separated by dots, at most 253 characters',
  zone: "must be a zone name: letters, digits, '-', '_' and '.', at most 63 characters",
  ip: 'must be an IPv4 or IPv6 address',
  duration: 'must be a duration such as 500ms, 1s, 5m or 3h',
  path: "must be an HTTP path starting with '/'",
  status: "must be an HTTP status code from 100 to 599 or a range such as '200-399'",
  vips: 'must be an IP address or a list of one IPv4 and/or one IPv6 address',
  externalIPs: 'must be a list of IP addresses',
});

const int = (min: number, max: number) => {
  const message = `must be an integer from ${min} to ${max}`;
  return z
    .number({ error: required(message) })
    .int({ error: message })
    .min(min, { error: message })
    .max(max, { error: message });
};

const pattern = (re: RegExp, message: string) =>
  z.string({ error: required(message) }).regex(re, { error: message });

const ip = z.string({ error: required(MESSAGES.ip) }).transform((text, ctx) => {
  const address = normaliseIp(text);
  if (address === null) {
    ctx.addIssue({ code: 'custom', message: MESSAGES.ip });
    return z.NEVER;
  }
  return address;
});

/** A duration string converted to milliseconds, with a lower bound. */
const duration = (minMs = 0) =>
  z.string({ error: required(MESSAGES.duration) }).transform((text, ctx) => {
    const ms = parseDuration(text);
    if (ms === null) {
      ctx.addIssue({ code: 'custom', message: MESSAGES.duration });
      return z.NEVER;
    }
    if (ms < minMs) {
      ctx.addIssue({ code: 'custom', message: `must be at least ${minMs}ms` });
      return z.NEVER;
    }
    return ms;
  });

const oneOf = <const T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, { error: required(`must be one of: ${values.join(', ')}`) });

const statusRange = z
  .union([z.number(), z.string()], { error: required(MESSAGES.status) })
  .transform((value, ctx) => {
    const match =
      typeof value === 'number' ? [String(value), String(value)] : /^(\d{3})-(\d{3})$/.exec(value)?.slice(1);
    const min = Number(match?.[0]);
    const max = Number(match?.[1]);
    if (!Number.isInteger(min) || !Number.isInteger(max) || min < 100 || max > 599 || min > max) {
      ctx.addIssue({ code: 'custom', message: MESSAGES.status });
      return z.NEVER;
    }
    return { min, max };
  });

export const PortSchema = z.strictObject({
  name: pattern(DNS_LABEL, MESSAGES.label).optional(),
  port: int(1, 65535),
  targetPort: int(1, 65535).optional(),
  protocol: oneOf(['TCP', 'UDP']).optional(),
});

export const BackendSchema = z.strictObject({
  address: ip,
  port: int(1, 65535).optional(),
  weight: int(0, 65535).optional(),
  node: pattern(NODE_NAME, MESSAGES.node).optional(),
  zone: pattern(ZONE, MESSAGES.zone).optional(),
});

export const HealthCheckSchema = z.strictObject({
  protocol: oneOf(['tcp', 'http', 'grpc']),
  path: z
    .string({ error: required(MESSAGES.path) })
    .regex(/^\/[\x21-\x7e]*$/, { error: MESSAGES.path })
    .optional(),
  service: z.string({ error: required('must be a string') }).optional(),
  port: int(1, 65535).optional(),
  interval: duration(100).optional(),
  timeout: duration(10).optional(),
  healthyThreshold: int(1, 100).optional(),
  unhealthyThreshold: int(1, 100).optional(),
  expectedStatus: statusRange.optional(),
});

export const OutlierDetectionSchema = z.strictObject({
  consecutiveFailures: int(1, 1000).optional(),
  baseEjectionTime: duration(100).optional(),
  maxEjectionPercent: int(0, 100).optional(),
});

export const AffinitySchema = z.strictObject({
  mode: oneOf(['none', 'client']).optional(),
  timeout: duration(1000).optional(),
});

export const ServiceSchema = z.strictObject({
  name: pattern(DNS_LABEL, MESSAGES.label),
  namespace: pattern(NAMESPACE_LABEL, MESSAGES.namespace).optional(),
  vip: z
    .union([z.string(), z.array(z.string())], { error: required(MESSAGES.vips) })
    .superRefine((vip, ctx) => {
      if (typeof vip === 'string') {
        if (normaliseIp(vip) === null) ctx.addIssue({ code: 'custom', message: MESSAGES.ip });
        return;
      }
      if (vip.length < 1 || vip.length > 2) ctx.addIssue({ code: 'custom', message: MESSAGES.vips });
      vip.forEach((text, i) => {
        if (normaliseIp(text) === null) ctx.addIssue({ code: 'custom', message: MESSAGES.ip, path: [i] });
      });
    }),
  externalIPs: z.array(ip, { error: required(MESSAGES.externalIPs) }).optional(),
  ports: z
    .array(PortSchema, { error: required('must be a list of ports') })
    .min(1, { error: 'must list at least one port' }),
  algorithm: oneOf(['random', 'weighted', 'round-robin', 'least-connections']).optional(),
  affinity: AffinitySchema.optional(),
  trafficDistribution: oneOf(['any', 'PreferNode', 'PreferZone']).optional(),
  healthCheck: HealthCheckSchema.optional(),
  outlierDetection: OutlierDetectionSchema.optional(),
  backends: z.array(BackendSchema, { error: required('must be a list of backends') }).optional(),
});

/** The parts of a service that identify it, read leniently to find clashes even when other fields are bad. */
export const IdentitySchema = z.object({
  name: z.string().regex(DNS_LABEL),
  namespace: z.string().regex(NAMESPACE_LABEL).optional(),
  vip: z.union([z.string(), z.array(z.string())]),
  externalIPs: z.array(z.string()).optional(),
  ports: z.array(
    z.object({ port: z.number().int().min(1).max(65535), protocol: z.enum(['TCP', 'UDP']).optional() }),
  ),
});

export const CatalogSchema = z.strictObject(
  {
    domain: pattern(DOMAIN, MESSAGES.domain).optional(),
    // Each service is validated on its own (parse.ts) so one bad service does not hide the others' errors.
    services: z.array(z.unknown(), { error: required('must be a list of services') }),
  },
  {
    error: (iss) =>
      iss.code === 'invalid_type' ? 'the catalog must be a mapping with a services list' : undefined,
  },
);

export type RawCatalog = z.output<typeof CatalogSchema>;
export type RawService = z.output<typeof ServiceSchema>;

/** Generic messages for issues a schema did not word itself. */
export function fallbackMessage(iss: {
  code: string;
  expected?: string;
  input?: unknown;
  values?: readonly unknown[];
}): string | undefined {
  switch (iss.code) {
    case 'invalid_type':
      if (iss.input === undefined) return 'is required';
      if (iss.expected === 'array') return 'must be a list';
      if (iss.expected === 'object') return 'must be a mapping';
      return `must be a ${iss.expected}`;
    case 'invalid_value':
      return `must be one of: ${(iss.values ?? []).join(', ')}`;
    case 'unrecognized_keys':
      return 'unknown field';
    default:
      return undefined;
  }
}
