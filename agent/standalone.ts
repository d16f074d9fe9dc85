/**
 * Standalone mode: one node, no controller. The catalog comes from a file in the controller's format,
 * parsed by the controller's own parser and watched for changes; every valid edit is applied as a new
 * version, an invalid one is logged with each error's path and reason and never applied (the last good
 * catalog stays programmed). This agent probes every backend in the file.
 */
import type { Logger } from 'pino';
import type { CatalogError } from '../controller/catalog';
import { formatCatalogError } from '../controller/catalog';
import { systemClock } from '../controller/clock';
import { FileCatalogSource } from '../controller/source-file';
import type { NodeAgent } from './node-agent';

export interface StandaloneOptions {
  readonly path: string;
  readonly agent: NodeAgent;
  readonly log: Logger;
  readonly debounceMs?: number;
  readonly pollMs?: number;
}

export interface Standalone {
  /** Resolves after the first load was applied (or found invalid). */
  readonly ready: Promise<void>;
  /** Errors of the file's newest content; empty when it is valid. */
  errors(): readonly CatalogError[];
  stop(): Promise<void>;
}

export function startStandalone(options: StandaloneOptions): Standalone {
  const log = options.log;
  const source = new FileCatalogSource({
    path: options.path,
    clock: systemClock,
    logger: log,
    ...(options.debounceMs !== undefined ? { debounceMs: options.debounceMs } : {}),
    ...(options.pollMs !== undefined ? { pollMs: options.pollMs } : {}),
  });
  let version = 0n;
  let errors: readonly CatalogError[] = [];
  let pending: Promise<unknown> = Promise.resolve();
  const ready = source.start({
    onCatalog(catalog) {
      errors = [];
      const next = ++version;
      pending = options.agent.applyCatalog({ version: next, catalog }).then((result) => {
        if (!result.ok)
          log.error({ version: String(next), reason: result.reason }, 'catalog file not applied');
      });
    },
    onInvalid(found) {
      errors = found;
      log.error(
        { file: options.path, errors: found.map(formatCatalogError) },
        `catalog file is invalid (${found.length} error${found.length === 1 ? '' : 's'}); keeping the last good catalog`,
      );
    },
  });
  return {
    ready: ready.then(() => pending).then(() => undefined),
    errors: () => errors,
    stop: () => source.stop(),
  };
}
