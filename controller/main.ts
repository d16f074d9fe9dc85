import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { parseArgs } from 'node:util';
import pino, { type Logger } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { parseDuration } from './catalog/duration';
import { formatCatalogError, parseCatalog } from './catalog/parse';
import { systemClock } from './clock';
import { CatalogInvalidError, ControllerServer, splitHostPort } from './server';
import { FileCatalogSource } from './source-file';

const USAGE = `usage:
  sluice-controller --config FILE --listen HOST:PORT [--metrics HOST:PORT]
                    [--tls-cert FILE --tls-key FILE --tls-ca FILE] [--insecure]
                    [--health-grace DURATION] [--log-level LEVEL]
  sluice-controller validate FILE`;

/** Thrown for bad command lines: printed with the usage, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export interface ControllerArgs {
  readonly config: string;
  readonly listen: string;
  readonly metrics: string | null;
  readonly tls: { cert: string; key: string; ca: string } | null;
  readonly insecure: boolean;
  readonly healthGraceMs: number;
  readonly logLevel: string;
}

/** Parses the serve command line. Pure; throws UsageError naming the flag. */
export function parseControllerArgs(argv: readonly string[]): ControllerArgs {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        config: { type: 'string' },
        listen: { type: 'string' },
        metrics: { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'tls-ca': { type: 'string' },
        insecure: { type: 'boolean', default: false },
        'health-grace': { type: 'string', default: '30s' },
        'log-level': { type: 'string', default: 'info' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const str = (name: string) => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  const config = str('config');
  const listen = str('listen');
  if (!config) throw new UsageError('--config is required');
  if (!listen) throw new UsageError('--listen is required');
  for (const [flag, address] of [
    ['--listen', listen],
    ['--metrics', str('metrics')],
  ] as const) {
    if (address === undefined) continue;
    try {
      splitHostPort(address);
    } catch (err) {
      throw new UsageError(`${flag}: ${(err as Error).message}`);
    }
  }
  const tlsParts = [str('tls-cert'), str('tls-key'), str('tls-ca')];
  const given = tlsParts.filter((p) => p !== undefined).length;
  if (given !== 0 && given !== 3)
    throw new UsageError('--tls-cert, --tls-key and --tls-ca must be given together');
  const healthGraceMs = parseDuration(str('health-grace') ?? '');
  if (healthGraceMs === null) throw new UsageError('--health-grace must be a duration such as 30s');
  const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
  const logLevel = str('log-level') ?? 'info';
  if (!levels.includes(logLevel)) throw new UsageError(`--log-level must be one of: ${levels.join(', ')}`);
  return {
    config,
    listen,
    metrics: str('metrics') ?? null,
    tls: given === 3 ? { cert: tlsParts[0]!, key: tlsParts[1]!, ca: tlsParts[2]! } : null,
    insecure: values.insecure === true,
    healthGraceMs,
    logLevel,
  };
}

/** `sluice-controller validate FILE`: every error on stderr, exit 1 if any. */
export function validate(path: string, out: NodeJS.WritableStream, err: NodeJS.WritableStream): number {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    err.write(`${path}: cannot read: ${(e as Error).message}\n`);
    return 1;
  }
  const result = parseCatalog(text, path);
  if (!result.ok) {
    for (const e of result.errors) err.write(`${path}: ${formatCatalogError(e)}\n`);
    err.write(`${path}: ${result.errors.length} error${result.errors.length === 1 ? '' : 's'}\n`);
    return 1;
  }
  const backends = result.catalog.services.reduce((n, s) => n + s.backends.length, 0);
  out.write(`${path}: ok (${result.catalog.services.length} services, ${backends} backends)\n`);
  return 0;
}

function serveMetrics(
  address: string,
  registry: Registry,
  controller: ControllerServer,
  logger: Logger,
): Promise<Server> {
  const { host, port } = splitHostPort(address);
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/metrics') {
      registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
        (e: Error) => res.writeHead(500).end(e.message),
      );
    } else if (url === '/status') {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(`${JSON.stringify(controller.status(), null, 2)}\n`);
    } else if (url === '/healthz') {
      res.writeHead(200).end('ok\n');
    } else {
      res.writeHead(404).end('not found: try /metrics, /status or /healthz\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      logger.info({ metrics: address }, 'metrics and status listening');
      resolve(server);
    });
  });
}

/** Runs the CLI; resolves with the exit code once the command is done (serve: after SIGINT/SIGTERM). */
export async function main(argv: readonly string[]): Promise<number> {
  if (argv[0] === 'validate') {
    if (argv.length !== 2) {
      process.stderr.write(`${USAGE}\n`);
      return 2;
    }
    return validate(argv[1]!, process.stdout, process.stderr);
  }
  if (argv[0] === '--help' || argv[0] === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let args: ControllerArgs;
  try {
    args = parseControllerArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`sluice-controller: ${err.message}\n${USAGE}\n`);
    return 2;
  }

  const logger = pino({ level: args.logLevel, base: { pid: process.pid, service: 'sluice-controller' } });
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'sluice_controller_' });
  const source = new FileCatalogSource({
    path: args.config,
    clock: systemClock,
    logger: logger.child({ component: 'file-source' }),
  });
  const controller = new ControllerServer({
    source,
    logger,
    registry,
    tls: args.tls,
    insecure: args.insecure,
    healthGraceMs: args.healthGraceMs,
  });
  let metricsServer: Server | null = null;
  try {
    await controller.start(args.listen);
    if (args.metrics) metricsServer = await serveMetrics(args.metrics, registry, controller, logger);
  } catch (err) {
    if (err instanceof CatalogInvalidError) {
      for (const line of err.errors) process.stderr.write(`${args.config}: ${line}\n`);
    }
    logger.fatal({ err }, 'controller failed to start');
    await controller.stop();
    return 1;
  }
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  logger.info('shutting down');
  metricsServer?.close();
  await controller.stop();
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
