/**
 * sluicectl: the node's data plane as tables, read from the pinned maps (the agent need not run).
 *
 *   sluicectl status | services | backends | maps [--json] [--bpffs DIR]
 */
import { parseArgs } from 'node:util';
import type { NativeBpf } from '../../native/types';
import { loadNative } from '../native-loader';
import { DEFAULT_BPFFS_DIR } from '../pins';
import { CtlError, readDataplane } from './read';
import { renderBackends, renderMaps, renderServices, renderStatus } from './render';
import type { DataplaneView } from './view';

const COMMANDS = ['status', 'services', 'backends', 'maps'] as const;
type Command = (typeof COMMANDS)[number];

export const USAGE = `usage: sluicectl <command> [--json] [--bpffs DIR]

commands:
  status     what is attached, and totals
  services   one row per VIP:port: policy, backends in rotation, connects
  backends   one row per backend: weight, health, ejection, active connections, share of connects
  maps       pinned maps: type, sizes, entries against capacity

options:
  --bpffs DIR   the agent's bpffs directory (default ${DEFAULT_BPFFS_DIR})
  --json        machine-readable output
`;

export interface CtlIo {
  out(text: string): void;
  err(text: string): void;
  color: boolean;
}

const processIo: CtlIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  color: process.stdout.isTTY === true,
};

/** The JSON shape of each command (stable for scripts). */
export function jsonFor(command: Command, view: DataplaneView): unknown {
  switch (command) {
    case 'status':
      return view;
    case 'services':
      return view.services.map(({ backends, ...service }) => ({ ...service, backendCount: backends.length }));
    case 'backends':
      return view.services.flatMap((s) =>
        s.backends.map((b) => ({
          service: { vip: s.vip, port: s.port, protocol: s.protocol, id: s.id },
          ...b,
        })),
      );
    case 'maps':
      return view.maps;
  }
}

export function renderFor(command: Command, view: DataplaneView, color: boolean): string {
  switch (command) {
    case 'status':
      return renderStatus(view, { color });
    case 'services':
      return renderServices(view, { color });
    case 'backends':
      return renderBackends(view, { color });
    case 'maps':
      return renderMaps(view, { color });
  }
}

/** Runs one sluicectl command; returns the exit code (0 ok, 1 failure, 2 usage). */
export async function main(
  argv: readonly string[],
  io: CtlIo = processIo,
  bpf: () => NativeBpf = loadNative,
): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    io.err(`sluicectl: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (parsed.help) {
    io.out(USAGE);
    return 0;
  }
  try {
    const view = readDataplane(bpf(), parsed.bpffs);
    if (parsed.json) io.out(`${JSON.stringify(jsonFor(parsed.command, view), null, 2)}\n`);
    else io.out(renderFor(parsed.command, view, io.color));
    return 0;
  } catch (error) {
    const err = error as Error & { code?: string };
    io.err(
      `sluicectl ${parsed.command}: ${err.message}${err.code && !(err instanceof CtlError) ? ` (${err.code})` : ''}\n`,
    );
    return 1;
  }
}

function parse(argv: readonly string[]) {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: {
      json: { type: 'boolean', default: false },
      bpffs: { type: 'string', default: DEFAULT_BPFFS_DIR },
      help: { type: 'boolean', short: 'h', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) return { help: true, command: 'status' as Command, json: false, bpffs: values.bpffs };
  if (positionals.length !== 1)
    throw new Error(`expected one command (${COMMANDS.join(', ')}), got ${positionals.length}`);
  const command = positionals[0] as Command;
  if (!COMMANDS.includes(command))
    throw new Error(`unknown command "${command}" (commands: ${COMMANDS.join(', ')})`);
  if (!values.bpffs.startsWith('/'))
    throw new Error(`--bpffs: must be an absolute path, got "${values.bpffs}"`);
  return { help: false, command, json: values.json, bpffs: values.bpffs };
}
