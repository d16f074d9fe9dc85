/**
 * The agent's command line, validated once into a frozen config. Defaults live in AGENT_DEFAULTS and
 * nowhere else; every error names the flag and the reason, with a stable code (SLUICE_ERR_CONFIG).
 *
 *   sluice-agent --controller HOST:PORT [--node NAME] [--zone ZONE] [--cgroup PATH] [--bpffs DIR]
 *                [--metrics HOST:PORT|off] [--dns HOST:PORT|off] [--log-level LEVEL]
 *                [--tls-cert FILE --tls-key FILE --tls-ca FILE | --insecure] [--state-dir DIR]
 *                [--fastpath off|mesh|all]
 *                [--xdp-interface IFNAME [--xdp-mode auto|native|generic] [--xdp-source IP]...
 *                 [--xdp-hash-seed N] [--xdp-table-size PRIME]]
 *   sluice-agent --config services.yaml [...same flags]          (standalone: no controller)
 *   sluice-agent uninstall [--cgroup PATH] [--bpffs DIR] [--log-level LEVEL]
 */

import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname as osHostname } from 'node:os';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { FASTPATH_MODES, type FastPathMode } from './fastpath/settings';
import { isPrime } from './xdp/maglev';
import { DEFAULT_XDP_HASH_SEED, XDP_MODES, type XdpAttachMode } from './xdp-wiring';

export const AGENT_DEFAULTS = Object.freeze({
  bpffs: '/sys/fs/bpf/sluice',
  metrics: '127.0.0.1:9464',
  dns: '127.0.0.1:5353',
  logLevel: 'info',
  stateDir: '/var/lib/sluice',
  /** Off by default: see docs/fastpath.md (the measured trade-off). */
  fastpath: 'off' as FastPathMode,
  xdpMode: 'auto' as XdpAttachMode,
  /** Every node must use the same seed (a flow keeps its backend whichever node it enters). */
  xdpHashSeed: DEFAULT_XDP_HASH_SEED,
});

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

interface CommonConfig {
  readonly cgroup: string;
  readonly bpffs: string;
  readonly logLevel: LogLevel;
}

export interface RunConfig extends CommonConfig {
  readonly command: 'run';
  /** 'controller': follow a controller's stream; 'standalone': serve the catalog in --config. */
  readonly mode: 'controller' | 'standalone';
  readonly controller: HostPort | undefined;
  readonly configFile: string | undefined;
  readonly node: string;
  readonly zone: string | undefined;
  /** undefined when disabled with `off`. */
  readonly metrics: HostPort | undefined;
  readonly dns: HostPort | undefined;
  /** mTLS to the controller (PEM files); undefined: plaintext (loopback, or with --insecure). */
  readonly tls: TlsFiles | undefined;
  /** Plaintext to a non-loopback controller was asked for explicitly. */
  readonly insecure: boolean;
  /** Where the last applied (ACKed) catalog is kept across restarts (controller mode). */
  readonly stateDir: string;
  /** Same-node fast path: off, on for node-local mesh endpoints, or on for any same-node TCP pair. */
  readonly fastpath: FastPathMode;
  /** The XDP load balancer for external IPs; undefined without --xdp-interface. */
  readonly xdp: XdpSettings | undefined;
}

export interface XdpSettings {
  readonly interface: string;
  readonly mode: XdpAttachMode;
  /** Outer source addresses for encapsulation (one per family); the interface's own when unset. */
  readonly encapSource4: string | undefined;
  readonly encapSource6: string | undefined;
  readonly hashSeed: number;
  /** Maglev table size per external IP:port; the program's default (65 537) when unset. */
  readonly tableSize: number | undefined;
}

export interface TlsFiles {
  /** This agent's client certificate. */
  readonly cert: string;
  /** Its private key. */
  readonly key: string;
  /** The CA that signed the controller's certificate. */
  readonly ca: string;
}

export interface UninstallConfig extends CommonConfig {
  readonly command: 'uninstall';
}

export type AgentConfig = RunConfig | UninstallConfig;

export class ConfigError extends Error {
  readonly code = 'SLUICE_ERR_CONFIG';
  constructor(
    /** The flag at fault, as typed on the command line (`--metrics`), or `argv` for usage errors. */
    readonly flag: string,
    readonly reason: string,
  ) {
    super(`${flag}: ${reason}`);
    this.name = 'ConfigError';
  }
}

/** What loadAgentConfig reads from the machine; injected so tests need no particular host. */
export interface ConfigEnvironment {
  /** Text of /proc/self/mounts. */
  readMounts(): string;
  hostname(): string;
}

export const systemEnvironment: ConfigEnvironment = {
  readMounts: () => readFileSync('/proc/self/mounts', 'utf8'),
  hostname: () => osHostname(),
};

/**
 * The cgroup v2 mount point in /proc/self/mounts text: /sys/fs/cgroup on a pure v2 host,
 * /sys/fs/cgroup/unified on a hybrid one. Octal escapes (\040 for a space) are decoded.
 */
export function cgroup2MountFrom(mounts: string): string | undefined {
  for (const line of mounts.split('\n')) {
    const [, mountPoint, fsType] = line.split(' ');
    if (fsType === 'cgroup2' && mountPoint) {
      return mountPoint.replace(/\\([0-7]{3})/g, (_, oct: string) =>
        String.fromCharCode(Number.parseInt(oct, 8)),
      );
    }
  }
  return undefined;
}

/** `host:port` or `[v6]:port`; port 0 asks the kernel for a free port (tests). */
export function parseHostPort(text: string): HostPort {
  const bracketed = text.match(/^\[([^\]]+)\]:(\d+)$/);
  const plain = text.match(/^([^:[\]]+):(\d+)$/);
  const match = bracketed ?? plain;
  if (!match?.[1] || match[2] === undefined) {
    throw new Error(`must be HOST:PORT or [IPV6]:PORT, got "${text}"`);
  }
  const host = match[1];
  const port = Number(match[2]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`port must be an integer from 0 to 65535, got "${match[2]}"`);
  }
  if (bracketed && isIP(host) !== 6) throw new Error(`"${host}" in brackets is not an IPv6 address`);
  return { host, port };
}

function hostPortSchema(allowOff: boolean) {
  return z.string().transform((text, ctx): HostPort | undefined => {
    if (allowOff && text === 'off') return undefined;
    try {
      return parseHostPort(text);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  });
}

const hostPort = hostPortSchema(false);
/** HOST:PORT, or `off` to disable the listener. */
const optionalHostPort = hostPortSchema(true);

// The same rules as the catalog's backends[].node and backends[].zone, so a node name that can never
// match a backend is caught here.
const nodeName = z
  .string()
  .regex(
    /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
    'must be a node name: lowercase DNS labels separated by dots, at most 253 characters',
  );
const zoneName = z
  .string()
  .regex(
    /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/,
    "must be a zone name: letters, digits, '-', '_' and '.', at most 63 characters",
  );

const absolutePath = z.string().refine((p) => p.startsWith('/'), 'must be an absolute path');

const commonSchema = {
  cgroup: absolutePath,
  bpffs: absolutePath,
  'log-level': z.enum(LOG_LEVELS),
};

const runSchema = z.object({
  ...commonSchema,
  controller: hostPort.optional(),
  config: z.string().min(1, 'must not be empty').optional(),
  node: nodeName,
  zone: zoneName.optional(),
  metrics: optionalHostPort,
  dns: optionalHostPort,
  'tls-cert': z.string().min(1, 'must not be empty').optional(),
  'tls-key': z.string().min(1, 'must not be empty').optional(),
  'tls-ca': z.string().min(1, 'must not be empty').optional(),
  'state-dir': absolutePath,
  fastpath: z.enum(FASTPATH_MODES),
  'xdp-interface': z
    .string()
    .regex(/^[A-Za-z0-9_.:@-]{1,15}$/, 'must be an interface name (at most 15 characters)')
    .optional(),
  'xdp-mode': z.enum(XDP_MODES),
  'xdp-source': z
    .array(z.string().refine((ip) => isIP(ip) !== 0, 'must be an IPv4 or IPv6 address'))
    .refine(
      (ips) =>
        ips.filter((ip) => isIP(ip) === 4).length <= 1 && ips.filter((ip) => isIP(ip) === 6).length <= 1,
      'at most one IPv4 and one IPv6 address',
    ),
  'xdp-hash-seed': z.coerce
    .number()
    .int('must be an integer')
    .min(0, 'must be from 0 to 4294967295')
    .max(0xffffffff, 'must be from 0 to 4294967295'),
  'xdp-table-size': z.coerce
    .number()
    .int('must be an integer')
    .refine((n) => n >= 3 && n <= 1_000_003 && isPrime(n), 'must be a prime from 3 to 1000003')
    .optional(),
});

const uninstallSchema = z.object(commonSchema);

const RUN_FLAGS = {
  controller: { type: 'string' },
  config: { type: 'string' },
  node: { type: 'string' },
  zone: { type: 'string' },
  cgroup: { type: 'string' },
  bpffs: { type: 'string' },
  metrics: { type: 'string' },
  dns: { type: 'string' },
  'log-level': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  insecure: { type: 'boolean' },
  'state-dir': { type: 'string' },
  fastpath: { type: 'string' },
  'xdp-interface': { type: 'string' },
  'xdp-mode': { type: 'string' },
  'xdp-source': { type: 'string', multiple: true },
  'xdp-hash-seed': { type: 'string' },
  'xdp-table-size': { type: 'string' },
} as const;

const UNINSTALL_FLAGS = {
  cgroup: { type: 'string' },
  bpffs: { type: 'string' },
  'log-level': { type: 'string' },
} as const;

type FlagValues<T> = {
  [K in keyof T]: T[K] extends { type: 'boolean' }
    ? boolean | undefined
    : T[K] extends { multiple: true }
      ? string[] | undefined
      : string | undefined;
};

function parseFlags<T extends Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>>(
  args: string[],
  options: T,
) {
  try {
    const { values } = parseArgs({ args, options, strict: true, allowPositionals: false });
    return values as unknown as FlagValues<T>;
  } catch (err) {
    const message = (err as Error).message;
    const flag = message.match(/'(--?[\w-]+)/)?.[1] ?? 'argv';
    throw new ConfigError(flag, message.replace(/\. To specify .*$/s, '').trim());
  }
}

function firstIssue(error: z.ZodError): ConfigError {
  const issue = error.issues[0]!;
  const flag = `--${String(issue.path[0] ?? 'argv')}`;
  const reason =
    issue.code === 'invalid_value' ? `must be one of ${issue.values.map(String).join(', ')}` : issue.message;
  return new ConfigError(flag, reason);
}

/** The controller's rule for plaintext: loopback addresses and `localhost` only. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1';
  return false;
}

function defaultCgroup(env: ConfigEnvironment): string {
  const mount = cgroup2MountFrom(env.readMounts());
  if (!mount)
    throw new ConfigError('--cgroup', 'no cgroup v2 hierarchy in /proc/self/mounts; pass --cgroup PATH');
  return mount;
}

/**
 * Parses argv (without node and the script), applies the defaults and returns a frozen config.
 * Throws ConfigError naming the flag; the first problem found is reported.
 */
export function loadAgentConfig(
  argv: readonly string[],
  env: ConfigEnvironment = systemEnvironment,
): AgentConfig {
  const [first, ...rest] = argv;
  if (first === 'uninstall') {
    const flags = parseFlags(rest, UNINSTALL_FLAGS);
    const parsed = uninstallSchema.safeParse({
      cgroup: flags.cgroup ?? defaultCgroup(env),
      bpffs: flags.bpffs ?? AGENT_DEFAULTS.bpffs,
      'log-level': flags['log-level'] ?? AGENT_DEFAULTS.logLevel,
    });
    if (!parsed.success) throw firstIssue(parsed.error);
    return Object.freeze({
      command: 'uninstall',
      cgroup: parsed.data.cgroup,
      bpffs: parsed.data.bpffs,
      logLevel: parsed.data['log-level'],
    });
  }
  if (first !== undefined && !first.startsWith('-')) {
    throw new ConfigError(
      'argv',
      `unknown command "${first}" (commands: uninstall; no command runs the agent)`,
    );
  }
  const flags = parseFlags([...argv], RUN_FLAGS);
  if (flags.controller !== undefined && flags.config !== undefined) {
    throw new ConfigError(
      '--config',
      'cannot be combined with --controller (standalone mode has no controller)',
    );
  }
  if (flags.controller === undefined && flags.config === undefined) {
    throw new ConfigError('--controller', 'required (or --config FILE for standalone mode)');
  }
  const parsed = runSchema.safeParse({
    controller: flags.controller,
    config: flags.config,
    // Hostnames are case-insensitive; node names in the catalog are lowercase.
    node: flags.node ?? env.hostname().toLowerCase(),
    zone: flags.zone,
    cgroup: flags.cgroup ?? defaultCgroup(env),
    bpffs: flags.bpffs ?? AGENT_DEFAULTS.bpffs,
    metrics: flags.metrics ?? AGENT_DEFAULTS.metrics,
    dns: flags.dns ?? AGENT_DEFAULTS.dns,
    'log-level': flags['log-level'] ?? AGENT_DEFAULTS.logLevel,
    'tls-cert': flags['tls-cert'],
    'tls-key': flags['tls-key'],
    'tls-ca': flags['tls-ca'],
    'state-dir': flags['state-dir'] ?? AGENT_DEFAULTS.stateDir,
    fastpath: flags.fastpath ?? AGENT_DEFAULTS.fastpath,
    'xdp-interface': flags['xdp-interface'],
    'xdp-mode': flags['xdp-mode'] ?? AGENT_DEFAULTS.xdpMode,
    'xdp-source': flags['xdp-source'] ?? [],
    'xdp-hash-seed': flags['xdp-hash-seed'] ?? AGENT_DEFAULTS.xdpHashSeed,
    'xdp-table-size': flags['xdp-table-size'],
  });
  if (!parsed.success) throw firstIssue(parsed.error);
  const d = parsed.data;
  const xdpOnly = (['xdp-mode', 'xdp-source', 'xdp-hash-seed', 'xdp-table-size'] as const).find(
    (f) => flags[f] !== undefined,
  );
  if (d['xdp-interface'] === undefined && xdpOnly !== undefined) {
    throw new ConfigError(`--${xdpOnly}`, 'only applies with --xdp-interface');
  }
  const tlsFlags = ['tls-cert', 'tls-key', 'tls-ca'] as const;
  const given = tlsFlags.filter((f) => d[f] !== undefined);
  const insecure = flags.insecure === true;
  const controllerOnly = [...given, ...(insecure ? ['insecure'] : [])];
  if (d.config !== undefined && controllerOnly[0] !== undefined) {
    throw new ConfigError(
      `--${controllerOnly[0]}`,
      'only applies with --controller (standalone mode has no controller)',
    );
  }
  if (given.length > 0 && given.length < 3) {
    const missing = tlsFlags.find((f) => d[f] === undefined)!;
    throw new ConfigError(
      `--${missing}`,
      `required with ${given.map((f) => `--${f}`).join(' and ')} (--tls-cert, --tls-key and --tls-ca go together)`,
    );
  }
  if (given.length === 3 && insecure) {
    throw new ConfigError('--insecure', 'cannot be combined with --tls-cert, --tls-key and --tls-ca');
  }
  if (d.controller && given.length === 0 && !insecure && !isLoopbackHost(d.controller.host)) {
    throw new ConfigError(
      '--controller',
      `refusing plaintext gRPC to non-loopback controller ${flags.controller}: give --tls-cert, --tls-key and --tls-ca, or --insecure`,
    );
  }
  return Object.freeze({
    command: 'run',
    mode: d.config !== undefined ? 'standalone' : 'controller',
    controller: d.controller ? Object.freeze(d.controller) : undefined,
    configFile: d.config,
    node: d.node,
    zone: d.zone,
    cgroup: d.cgroup,
    bpffs: d.bpffs,
    metrics: d.metrics ? Object.freeze(d.metrics) : undefined,
    dns: d.dns ? Object.freeze(d.dns) : undefined,
    logLevel: d['log-level'],
    tls:
      given.length === 3
        ? Object.freeze({ cert: d['tls-cert']!, key: d['tls-key']!, ca: d['tls-ca']! })
        : undefined,
    insecure,
    stateDir: d['state-dir'],
    fastpath: d.fastpath,
    xdp:
      d['xdp-interface'] === undefined
        ? undefined
        : Object.freeze({
            interface: d['xdp-interface'],
            mode: d['xdp-mode'],
            encapSource4: d['xdp-source'].find((ip) => isIP(ip) === 4),
            encapSource6: d['xdp-source'].find((ip) => isIP(ip) === 6),
            hashSeed: d['xdp-hash-seed'],
            tableSize: d['xdp-table-size'],
          }),
  });
}
