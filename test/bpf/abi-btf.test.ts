/**
 * The layout check between C and TypeScript: every struct in bpf/include/*.h has a codec under
 * agent/abi/, and each codec's size, field names, offsets and field sizes equal the BTF that clang wrote
 * into the built objects. A field added on one side only fails here, not in production.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { definedStructs, type StructCodec } from '../../agent/abi/codec';

const ROOT = resolve(__dirname, '../..');
const OBJECT_DIR = join(ROOT, 'build/bpf');
const ABI_DIR = join(ROOT, 'agent/abi');
const HEADER_DIR = join(ROOT, 'bpf/include');

interface BtfMember {
  name: string;
  type_id: number;
  bits_offset: number;
}

interface BtfType {
  id: number;
  kind: string;
  name?: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: BtfMember[];
}

/** Struct name → its BTF in the objects (the first object that has it), with a size resolver. */
function loadBtfStructs(): Map<string, { object: string; type: BtfType; sizeOf: (id: number) => number }> {
  const found = new Map<string, { object: string; type: BtfType; sizeOf: (id: number) => number }>();
  for (const file of readdirSync(OBJECT_DIR).filter((f) => f.endsWith('.bpf.o'))) {
    const json = execFileSync('bpftool', ['btf', 'dump', 'file', join(OBJECT_DIR, file), '-j'], {
      encoding: 'utf8',
      maxBuffer: 256 * 1024 * 1024,
    });
    const types = new Map<number, BtfType>();
    for (const type of (JSON.parse(json) as { types: BtfType[] }).types) types.set(type.id, type);
    const sizeOf = (id: number): number => {
      const type = types.get(id);
      if (!type) throw new Error(`BTF type ${id} missing in ${file}`);
      switch (type.kind) {
        case 'INT':
        case 'STRUCT':
        case 'UNION':
        case 'ENUM':
        case 'ENUM64':
        case 'FLOAT':
          return type.size ?? 0;
        case 'PTR':
          return 8;
        case 'ARRAY':
          return (type.nr_elems ?? 0) * sizeOf(type.type_id ?? 0);
        default:
          // TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG: the size of what they name.
          return sizeOf(type.type_id ?? 0);
      }
    };
    for (const type of types.values()) {
      if (type.kind === 'STRUCT' && type.name && !found.has(type.name)) {
        found.set(type.name, { object: file, type, sizeOf });
      }
    }
  }
  return found;
}

function structsDeclaredInHeaders(): string[] {
  const names = new Set<string>();
  for (const file of readdirSync(HEADER_DIR).filter((f) => f.endsWith('.h'))) {
    const text = readFileSync(join(HEADER_DIR, file), 'utf8');
    for (const match of text.matchAll(/^struct\s+(\w+)\s*\{/gm)) names.add(match[1]!);
  }
  return [...names].sort();
}

describe('BPF ABI: TypeScript codecs match the objects BTF', () => {
  let btf: ReturnType<typeof loadBtfStructs>;

  beforeAll(async () => {
    if (!existsSync(OBJECT_DIR) || readdirSync(OBJECT_DIR).every((f) => !f.endsWith('.bpf.o'))) {
      throw new Error(`no BPF objects in ${OBJECT_DIR}: run make bpf`);
    }
    for (const file of readdirSync(ABI_DIR).filter((f) => f.endsWith('.ts'))) {
      await import(join(ABI_DIR, file));
    }
    btf = loadBtfStructs();
  });

  it('has a codec for every struct in bpf/include', () => {
    const missing = structsDeclaredInHeaders().filter((name) => !definedStructs.has(name));
    expect(missing).toEqual([]);
  });

  it('matches size, field offsets and field sizes for every codec', () => {
    const problems: string[] = [];
    const codecs = [...definedStructs.values()].filter((codec) => !codec.name.startsWith('test_'));
    expect(codecs.length).toBeGreaterThan(0);
    for (const codec of codecs as StructCodec<unknown>[]) {
      const entry = btf.get(codec.name);
      if (!entry) {
        problems.push(`${codec.name}: not in the BTF of any object (is it used by a map or program?)`);
        continue;
      }
      const { type, sizeOf, object } = entry;
      if (type.size !== codec.size)
        problems.push(`${codec.name}: size ${codec.size} in TS, ${type.size} in ${object}`);
      const members = type.members ?? [];
      const btfFields = members.map((m) => `${m.name}@${m.bits_offset / 8}:${sizeOf(m.type_id)}`);
      const tsFields = codec.fields.map((f) => `${f.name}@${f.offset}:${f.size}`);
      if (btfFields.join(' ') !== tsFields.join(' ')) {
        problems.push(
          `${codec.name} (${object}):\n  BTF ${btfFields.join(' ')}\n  TS  ${tsFields.join(' ')}`,
        );
      }
    }
    expect(problems).toEqual([]);
  });
});
