/**
 * Codecs for the structs shared between BPF programs and userspace (bpf/include/*.h). A codec lays its
 * fields out by C's natural alignment rules, so `size` and each field's `offset` must equal what clang
 * put in the object's BTF; test/bpf/abi-btf.test.ts checks every codec defined here against the built
 * objects, so a layout drift fails CI (the idea of Cilium's alignchecker).
 */

interface ScalarType<V> {
  readonly kind: 'scalar';
  readonly size: number;
  readonly align: number;
  read(buf: Buffer, offset: number): V;
  write(buf: Buffer, offset: number, value: V): void;
  readonly zero: V;
}

interface BytesType {
  readonly kind: 'bytes';
  readonly size: number;
  readonly align: 1;
}

interface ArrayType<V> {
  readonly kind: 'array';
  readonly element: FieldType<V>;
  readonly length: number;
  readonly size: number;
  readonly align: number;
}

export type FieldType<V = unknown> = ScalarType<V> | BytesType | ArrayType<V> | StructCodec<V>;

type ValueOf<T> =
  T extends ScalarType<infer V>
    ? V
    : T extends BytesType
      ? Buffer
      : T extends ArrayType<infer V>
        ? V[]
        : T extends StructCodec<infer V>
          ? V
          : never;

type FieldList = readonly (readonly [string, FieldType<never> | FieldType])[];

type Decoded<F extends FieldList> = { [E in F[number] as E[0]]: ValueOf<E[1]> };

/** Input to encode: every field required except explicit padding (`pad*`), which is zero-filled. */
export type EncodeInput<T> = { [K in keyof T as K extends `pad${string}` ? never : K]: T[K] } & {
  [K in keyof T as K extends `pad${string}` ? K : never]?: T[K];
};

export interface FieldLayout {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
}

export interface StructCodec<T> {
  readonly kind: 'struct';
  /** The C struct name (without `struct`), as it appears in BTF. */
  readonly name: string;
  readonly size: number;
  readonly align: number;
  readonly fields: readonly FieldLayout[];
  encode(value: EncodeInput<T>): Buffer;
  encodeInto(buf: Buffer, offset: number, value: EncodeInput<T>): void;
  decode(buf: Buffer, offset?: number): T;
}

function scalar<V>(
  size: number,
  read: (buf: Buffer, offset: number) => V,
  write: (buf: Buffer, offset: number, value: V) => void,
  zero: V,
): ScalarType<V> {
  return { kind: 'scalar', size, align: size, read, write, zero };
}

export const u8 = scalar<number>(
  1,
  (b, o) => b.readUInt8(o),
  (b, o, v) => b.writeUInt8(v, o),
  0,
);
export const u16 = scalar<number>(
  2,
  (b, o) => b.readUInt16LE(o),
  (b, o, v) => b.writeUInt16LE(v, o),
  0,
);
export const u32 = scalar<number>(
  4,
  (b, o) => b.readUInt32LE(o),
  (b, o, v) => b.writeUInt32LE(v, o),
  0,
);
export const i32 = scalar<number>(
  4,
  (b, o) => b.readInt32LE(o),
  (b, o, v) => b.writeInt32LE(v, o),
  0,
);
export const u64 = scalar<bigint>(
  8,
  (b, o) => b.readBigUInt64LE(o),
  (b, o, v) => b.writeBigUInt64LE(v, o),
  0n,
);
export const i64 = scalar<bigint>(
  8,
  (b, o) => b.readBigInt64LE(o),
  (b, o, v) => b.writeBigInt64LE(v, o),
  0n,
);
/** Network byte order (`__be16`): the value is the host number, stored big-endian. */
export const be16 = scalar<number>(
  2,
  (b, o) => b.readUInt16BE(o),
  (b, o, v) => b.writeUInt16BE(v, o),
  0,
);
/** Network byte order (`__be32`). */
export const be32 = scalar<number>(
  4,
  (b, o) => b.readUInt32BE(o),
  (b, o, v) => b.writeUInt32BE(v, o),
  0,
);

/** A fixed-size byte field (`__u8 x[n]`), e.g. an address or padding. */
export function bytes(size: number): BytesType {
  return { kind: 'bytes', size, align: 1 };
}

/** A fixed-length array of a field type (`__u32 x[n]`). */
export function array<V>(element: FieldType<V>, length: number): ArrayType<V> {
  return { kind: 'array', element, length, size: element.size * length, align: element.align };
}

const alignUp = (value: number, align: number): number => Math.ceil(value / align) * align;

function writeField(type: FieldType, buf: Buffer, offset: number, value: unknown, path: string): void {
  switch (type.kind) {
    case 'scalar':
      try {
        type.write(buf, offset, (value ?? type.zero) as never);
      } catch (error) {
        throw new RangeError(`${path}: ${(error as Error).message}`);
      }
      return;
    case 'bytes': {
      if (value === undefined) return;
      if (!Buffer.isBuffer(value) || value.length !== type.size) {
        throw new RangeError(`${path}: must be a Buffer of ${type.size} bytes`);
      }
      value.copy(buf, offset);
      return;
    }
    case 'array': {
      if (value === undefined) return;
      const items = value as unknown[];
      if (!Array.isArray(items) || items.length > type.length) {
        throw new RangeError(`${path}: must be an array of at most ${type.length} items`);
      }
      items.forEach((item, i) => {
        writeField(type.element, buf, offset + i * type.element.size, item, `${path}[${i}]`);
      });
      return;
    }
    case 'struct':
      if (value !== undefined) type.encodeInto(buf, offset, value as never);
      return;
  }
}

function readField(type: FieldType, buf: Buffer, offset: number): unknown {
  switch (type.kind) {
    case 'scalar':
      return type.read(buf, offset);
    case 'bytes':
      return Buffer.from(buf.subarray(offset, offset + type.size));
    case 'array':
      return Array.from({ length: type.length }, (_, i) =>
        readField(type.element, buf, offset + i * type.element.size),
      );
    case 'struct':
      return type.decode(buf, offset);
  }
}

/** A map key that is one u32 id (array indexes, backend and service ids), in host byte order. */
export function u32Key(id: number): Buffer {
  const key = Buffer.alloc(4);
  key.writeUInt32LE(id);
  return key;
}

/** Field offsets by name (the ABI's one definition), for encoders that write fields in place. */
export function fieldOffsets<K extends string>(
  codec: { readonly name: string; readonly fields: readonly { name: string; offset: number }[] },
  names: readonly K[],
): Record<K, number> {
  const out = {} as Record<K, number>;
  for (const name of names) {
    const field = codec.fields.find((f) => f.name === name);
    if (!field) throw new Error(`${codec.name} has no field ${name}`);
    out[name] = field.offset;
  }
  return out;
}

/** Every codec defined, by C name: the BTF check walks this. */
export const definedStructs = new Map<string, StructCodec<unknown>>();

export function defineStruct<const F extends FieldList>(name: string, fieldList: F): StructCodec<Decoded<F>> {
  const layout: (FieldLayout & { type: FieldType })[] = [];
  let offset = 0;
  let align = 1;
  for (const [fieldName, type] of fieldList) {
    const fieldType = type as FieldType;
    offset = alignUp(offset, fieldType.align);
    layout.push({ name: fieldName, offset, size: fieldType.size, type: fieldType });
    offset += fieldType.size;
    align = Math.max(align, fieldType.align);
  }
  const size = alignUp(offset, align);
  const codec: StructCodec<Decoded<F>> = {
    kind: 'struct',
    name,
    size,
    align,
    fields: layout.map(({ name: n, offset: o, size: s }) => ({ name: n, offset: o, size: s })),
    encodeInto(buf, base, value) {
      const record = value as Record<string, unknown>;
      for (const field of layout) {
        writeField(field.type, buf, base + field.offset, record[field.name], `${name}.${field.name}`);
      }
    },
    encode(value) {
      const buf = Buffer.alloc(size);
      codec.encodeInto(buf, 0, value);
      return buf;
    },
    decode(buf, base = 0) {
      if (buf.length < base + size) {
        throw new RangeError(`${name}: need ${size} bytes at offset ${base}, buffer has ${buf.length}`);
      }
      const out: Record<string, unknown> = {};
      for (const field of layout) out[field.name] = readField(field.type, buf, base + field.offset);
      return out as Decoded<F>;
    },
  };
  if (definedStructs.has(name)) throw new Error(`struct ${name} is defined twice`);
  definedStructs.set(name, codec as StructCodec<unknown>);
  return codec;
}
