/**
 * Where benchmark results go: each benchmark owns one section of docs/benchmarks.md, between
 * `<!-- BEGIN name -->` and `<!-- END name -->`, and rewrites only that section, so benchmarks run at
 * different times never overwrite each other's results.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../native';

export const BENCHMARKS_DOC = join(packageRoot(__dirname), 'docs/benchmarks.md');

/** Replaces the section `name` (appending it when missing) with `body`. */
export function writeBenchmarkSection(name: string, body: string, file = BENCHMARKS_DOC): void {
  const begin = `<!-- BEGIN ${name} -->`;
  const end = `<!-- END ${name} -->`;
  const block = `${begin}\n${body.trim()}\n${end}`;
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  const from = text.indexOf(begin);
  const to = text.indexOf(end);
  const next =
    from >= 0 && to > from
      ? text.slice(0, from) + block + text.slice(to + end.length)
      : `${text.trimEnd()}\n\n${block}\n`;
  writeFileSync(file, next);
}
