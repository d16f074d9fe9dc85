import { type FSWatcher, watch } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';
import { CatalogParseCache, formatCatalogError, parseCatalog } from './catalog/parse';
import type { CatalogError } from './catalog/types';
import type { Clock } from './clock';
import type { CatalogSource, CatalogSourceListener, CatalogSourceStatus } from './source';

export interface FileCatalogSourceOptions {
  readonly path: string;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Quiet time after a change event before re-reading (editors write in several steps). */
  readonly debounceMs?: number;
  /** Safety-net poll of size and mtime, also the only mechanism when fs.watch is unavailable. */
  readonly pollMs?: number;
}

/**
 * A catalog file (YAML or JSON), watched with fs.watch on its directory (so editors that replace the file by
 * renaming are seen) plus a slow stat poll as a fallback. Changes are debounced; identical content is
 * ignored. An invalid edit is reported through onInvalid and the listener keeps its last good catalog.
 */
export class FileCatalogSource implements CatalogSource {
  readonly description: string;
  private listener: CatalogSourceListener | null = null;
  private watcher: FSWatcher | null = null;
  private debounceTimer: unknown = null;
  private pollTimer: unknown = null;
  private lastText: string | null = null;
  private lastStat = '';
  private errors: readonly CatalogError[] = [];
  private loads = 0;
  private lastGoodAt: number | null = null;
  private reading: Promise<void> = Promise.resolve();
  private stopped = false;
  private readonly cache = new CatalogParseCache();

  constructor(private readonly options: FileCatalogSourceOptions) {
    this.description = `file ${options.path}`;
  }

  async start(listener: CatalogSourceListener): Promise<void> {
    this.listener = listener;
    await this.reload();
    const name = basename(this.options.path);
    try {
      this.watcher = watch(dirname(this.options.path), { persistent: false }, (_event, file) => {
        if (file === null || file === name) this.schedule();
      });
      this.watcher.on('error', (err) => {
        this.options.logger.warn({ err }, 'file watch failed, polling only');
        this.watcher?.close();
        this.watcher = null;
      });
    } catch (err) {
      this.options.logger.warn({ err }, 'fs.watch unavailable, polling only');
    }
    this.poll();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = null;
    if (this.debounceTimer !== null) this.options.clock.clearTimeout(this.debounceTimer);
    if (this.pollTimer !== null) this.options.clock.clearTimeout(this.pollTimer);
    await this.reading;
  }

  status(): CatalogSourceStatus {
    return {
      description: this.description,
      errors: this.errors,
      loads: this.loads,
      lastGoodAt: this.lastGoodAt,
    };
  }

  private schedule(): void {
    if (this.stopped) return;
    if (this.debounceTimer !== null) this.options.clock.clearTimeout(this.debounceTimer);
    this.debounceTimer = this.options.clock.setTimeout(() => {
      this.debounceTimer = null;
      void this.reload();
    }, this.options.debounceMs ?? 20);
  }

  private poll(): void {
    if (this.stopped) return;
    this.pollTimer = this.options.clock.setTimeout(async () => {
      try {
        const st = await stat(this.options.path);
        const signature = `${st.size}:${st.mtimeMs}:${st.ino}`;
        if (signature !== this.lastStat) this.schedule();
      } catch {
        // A missing file is reported by reload() when a watch event or the next change comes.
      }
      this.poll();
    }, this.options.pollMs ?? 2000);
  }

  /** Reads serially: a slow read never overlaps the next one. */
  private reload(): Promise<void> {
    this.reading = this.reading.then(() => this.readOnce());
    return this.reading;
  }

  private async readOnce(): Promise<void> {
    if (this.stopped && this.loads > 0) return;
    let text: string;
    const started = this.options.clock.now();
    try {
      const file = await readWhole(this.options.path);
      this.lastStat = file.signature;
      text = file.text;
    } catch (err) {
      this.lastText = null;
      this.invalid([{ path: '', message: `cannot read ${this.options.path}: ${(err as Error).message}` }]);
      return;
    }
    if (text === this.lastText) return;
    this.lastText = text;
    this.loads++;
    const read = this.options.clock.now();
    const result = parseCatalog(text, this.options.path, { cache: this.cache });
    const parsed = this.options.clock.now();
    this.options.logger.info(
      {
        source: this.options.path,
        readMs: round(read - started),
        parseMs: round(parsed - read),
        ok: result.ok,
      },
      'catalog read',
    );
    if (!result.ok) {
      this.invalid(result.errors);
      return;
    }
    this.errors = [];
    this.lastGoodAt = Date.now();
    this.listener?.onCatalog(result.catalog);
  }

  private invalid(errors: readonly CatalogError[]): void {
    const first = this.errors.length === 0;
    this.errors = errors;
    this.options.logger.error(
      { source: this.options.path, errors: errors.map(formatCatalogError) },
      first ? 'catalog is invalid, keeping the last good one' : 'catalog is still invalid',
    );
    this.listener?.onInvalid(errors);
  }
}

/**
 * Reads a file with one open, one fstat and (normally) one read of its whole size, instead of
 * readFile's chunked reads (several thread-pool round trips for a multi-MiB catalog). The stat
 * signature is of the file actually read.
 */
async function readWhole(path: string): Promise<{ text: string; signature: string }> {
  const handle = await open(path, 'r');
  try {
    const st = await handle.stat();
    const signature = `${st.size}:${st.mtimeMs}:${st.ino}`;
    // Size unknown (not a regular file): read to the end the ordinary way.
    if (st.size === 0) return { text: await handle.readFile('utf8'), signature };
    // Exactly the size seen: a file that grows meanwhile sends another change event.
    const buffer = Buffer.allocUnsafe(st.size);
    let length = 0;
    while (length < st.size) {
      const { bytesRead } = await handle.read(buffer, length, st.size - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    return { text: buffer.toString('utf8', 0, length), signature };
  } finally {
    await handle.close();
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
