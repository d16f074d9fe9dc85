/** Reading what a helper process prints; no vitest here, so benchmarks share it with the tests. */
import type { ChildProcess } from 'node:child_process';

/** Resolves with a child's first stdout line; rejects if it exits or times out first (with its stderr). */
export function firstLine(child: ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`no output within ${timeoutMs} ms: ${err}`)), timeoutMs);
    child.stderr?.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const newline = out.indexOf('\n');
      if (newline >= 0) {
        clearTimeout(timer);
        resolve(out.slice(0, newline));
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (!out.includes('\n')) reject(new Error(`exited with ${code} before output: ${err}`));
    });
  });
}

/** The first stdout line, parsed as JSON. */
export async function firstJsonLine<T>(child: ChildProcess, timeoutMs: number): Promise<T> {
  return JSON.parse(await firstLine(child, timeoutMs)) as T;
}
