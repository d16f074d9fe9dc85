/**
 * The DNS zone the agent serves, as pure functions: buildDnsIndex() turns a catalog-like model into a
 * lookup table, answerQuery() turns a decoded query into a response packet, encodeForUdp() applies the
 * UDP size limit (setting TC so resolvers retry over TCP).
 *
 * Names, for each service under `<domain>`:
 *   <name>.<namespace>.svc.<domain>                    A / AAAA → the service's VIPs
 *   _<port-name>._<proto>.<name>.<namespace>.svc.<domain>  SRV 0 100 <port> <name>.<namespace>.svc.<domain>
 *                                                      (named ports only; the VIPs go in the additional section)
 *   <domain>                                           SOA
 * Responses are authoritative (AA), with a short TTL (default 5s). Unknown names under the domain get
 * NXDOMAIN, existing names without records of the asked type (and empty non-terminals such as
 * `<namespace>.svc.<domain>`) get NODATA (NOERROR, no answer); both carry the SOA for negative caching
 * (RFC 2308). Names outside the domain get REFUSED: this is not a recursive resolver.
 */
import { isIP } from 'node:net';
import {
  type Answer,
  AUTHORITATIVE_ANSWER,
  type DecodedPacket,
  encode,
  type OptAnswer,
  type Packet,
  type Question,
  RECURSION_DESIRED,
  TRUNCATED_RESPONSE,
} from 'dns-packet';

/** The minimal catalog shape the DNS zone needs (a subset of the controller's catalog model). */
export interface DnsCatalogInput {
  readonly domain: string;
  /** Catalog version; becomes the SOA serial (mod 2^32). */
  readonly version?: number | bigint | undefined;
  readonly services: readonly DnsServiceInput[];
}

export interface DnsServiceInput {
  readonly name: string;
  readonly namespace: string;
  /** One VIP or a list (an IPv4 and an IPv6). */
  readonly vip: string | readonly string[];
  readonly ports: readonly DnsPortInput[];
}

export interface DnsPortInput {
  readonly name?: string | undefined;
  readonly port: number;
  readonly protocol?: 'TCP' | 'UDP' | 'SCTP' | undefined;
}

export interface SrvRecord {
  readonly port: number;
  readonly target: string;
}

export interface NameRecords {
  readonly a: readonly string[];
  readonly aaaa: readonly string[];
  readonly srv: readonly SrvRecord[];
}

export interface DnsIndex {
  /** Lower case, no trailing dot. */
  readonly domain: string;
  readonly ttl: number;
  readonly serial: number;
  /** Owner name (lower case, no trailing dot) → records. */
  readonly names: ReadonlyMap<string, NameRecords>;
  /** Names that exist only because names below them do (`svc.<domain>`, `_tcp.web.default.svc.<domain>`). */
  readonly emptyNonTerminals: ReadonlySet<string>;
}

export const DEFAULT_TTL = 5;
/** The largest UDP response we send when the client advertises EDNS (the DNS flag day 2020 value). */
export const EDNS_UDP_SIZE = 1232;
const CLASSIC_UDP_SIZE = 512;

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function checkDomain(domain: string): string {
  const d = normalizeName(domain);
  if (d.length === 0 || d.length > 253 || !d.split('.').every((l) => LABEL.test(l))) {
    throw new RangeError(`domain: "${domain}" is not a valid DNS domain`);
  }
  return d;
}

/** Builds the lookup table. Throws RangeError naming the path and reason on input it cannot serve. */
export function buildDnsIndex(catalog: DnsCatalogInput, options: { ttl?: number } = {}): DnsIndex {
  const ttl = options.ttl ?? DEFAULT_TTL;
  if (!Number.isInteger(ttl) || ttl < 0 || ttl > 86400)
    throw new RangeError(`ttl: must be 0-86400 seconds, got ${ttl}`);
  const domain = checkDomain(catalog.domain);
  const names = new Map<string, NameRecords>();
  const emptyNonTerminals = new Set<string>();
  const addAncestors = (owner: string) => {
    let rest = owner;
    for (;;) {
      const dot = rest.indexOf('.');
      rest = rest.slice(dot + 1);
      if (rest === domain || dot < 0) break;
      emptyNonTerminals.add(rest);
    }
  };
  catalog.services.forEach((svc, i) => {
    const at = `services[${i}]`;
    for (const [field, value] of [
      ['name', svc.name],
      ['namespace', svc.namespace],
    ] as const) {
      if (!LABEL.test(value)) throw new RangeError(`${at}.${field}: "${value}" is not a valid DNS label`);
    }
    const owner = `${svc.name}.${svc.namespace}.svc.${domain}`;
    if (names.has(owner)) throw new RangeError(`${at}: ${svc.namespace}/${svc.name} is listed twice`);
    const vips = typeof svc.vip === 'string' ? [svc.vip] : svc.vip;
    const a: string[] = [];
    const aaaa: string[] = [];
    for (const vip of vips) {
      const family = isIP(vip);
      if (family === 4) a.push(vip);
      else if (family === 6) aaaa.push(vip);
      else throw new RangeError(`${at}.vip: "${vip}" is not an IP address`);
    }
    names.set(owner, { a, aaaa, srv: [] });
    addAncestors(owner);
    svc.ports.forEach((port, j) => {
      if (port.name === undefined || port.name === '') return;
      const portName = port.name.toLowerCase();
      if (!LABEL.test(portName)) {
        throw new RangeError(`${at}.ports[${j}].name: "${port.name}" is not a valid port name for SRV`);
      }
      const proto = (port.protocol ?? 'TCP').toLowerCase();
      const srvName = `_${portName}._${proto}.${owner}`;
      const existing = names.get(srvName);
      const record = { port: port.port, target: owner };
      names.set(srvName, { a: [], aaaa: [], srv: existing ? [...existing.srv, record] : [record] });
      addAncestors(srvName);
    });
  });
  emptyNonTerminals.add(`svc.${domain}`);
  for (const name of names.keys()) emptyNonTerminals.delete(name);
  const serial = Number(BigInt(catalog.version ?? 1) % 4294967296n);
  return { domain, ttl, serial, names, emptyNonTerminals };
}

function soa(index: DnsIndex): Answer {
  return {
    type: 'SOA',
    name: index.domain,
    ttl: index.ttl,
    class: 'IN',
    data: {
      mname: `ns.dns.${index.domain}`,
      rname: `hostmaster.${index.domain}`,
      serial: index.serial,
      refresh: 7200,
      retry: 1800,
      expire: 86400,
      minimum: index.ttl,
    },
  };
}

function addressAnswers(name: string, records: NameRecords, type: 'A' | 'AAAA', ttl: number): Answer[] {
  const list = type === 'A' ? records.a : records.aaaa;
  return list.map((data) => ({ type, name, ttl, class: 'IN' as const, data }));
}

export interface DnsResponse {
  readonly packet: Packet;
  /** Largest size the client accepts over UDP. */
  readonly udpLimit: number;
}

function opcodeOf(query: DecodedPacket): number {
  return ((query.flags ?? 0) >> 11) & 0xf;
}

function respond(
  query: DecodedPacket,
  rcode: number,
  parts: { answers?: Answer[]; authorities?: Answer[]; additionals?: Answer[]; aa?: boolean },
): DnsResponse {
  const opt = (query.additionals ?? []).find((a): a is OptAnswer => a.type === 'OPT');
  const additionals = [...(parts.additionals ?? [])];
  if (opt) {
    additionals.push({
      type: 'OPT',
      name: '.',
      udpPayloadSize: EDNS_UDP_SIZE,
      flags: 0,
    } as unknown as Answer);
  }
  const flags =
    (opcodeOf(query) << 11) |
    (parts.aa === false ? 0 : AUTHORITATIVE_ANSWER) |
    ((query.flags ?? 0) & RECURSION_DESIRED) |
    rcode;
  return {
    packet: {
      type: 'response',
      id: query.id ?? 0,
      flags,
      questions: (query.questions ?? []).slice(0, 1),
      answers: parts.answers ?? [],
      authorities: parts.authorities ?? [],
      additionals,
    },
    udpLimit: opt
      ? Math.max(CLASSIC_UDP_SIZE, Math.min(opt.udpPayloadSize, EDNS_UDP_SIZE))
      : CLASSIC_UDP_SIZE,
  };
}

/** The response to a decoded query; undefined when the packet is itself a response (dropped). */
export function answerQuery(index: DnsIndex, query: DecodedPacket): DnsResponse | undefined {
  if (query.type === 'response') return undefined;
  if (opcodeOf(query) !== 0) return respond(query, RCODE.NOTIMP, { aa: false });
  const questions = query.questions ?? [];
  if (questions.length !== 1) return respond(query, RCODE.FORMERR, { aa: false });
  const question = questions[0] as Question;
  const name = normalizeName(question.name);
  const inZone = name === index.domain || name.endsWith(`.${index.domain}`);
  const klass = question.class ?? 'IN';
  if (!inZone || (klass !== 'IN' && klass !== 'ANY')) return respond(query, RCODE.REFUSED, { aa: false });

  const ttl = index.ttl;
  const negative = { authorities: [soa(index)] };
  if (name === index.domain) {
    if (question.type === 'SOA' || (question.type as string) === 'ANY') {
      return respond(query, RCODE.NOERROR, { answers: [{ ...soa(index), name: question.name }] });
    }
    return respond(query, RCODE.NOERROR, negative);
  }
  const records = index.names.get(name);
  if (!records) {
    if (index.emptyNonTerminals.has(name)) return respond(query, RCODE.NOERROR, negative);
    return respond(query, RCODE.NXDOMAIN, negative);
  }
  const type = question.type as string;
  const answers: Answer[] = [];
  const additionals: Answer[] = [];
  if (type === 'A' || type === 'ANY') answers.push(...addressAnswers(question.name, records, 'A', ttl));
  if (type === 'AAAA' || type === 'ANY') answers.push(...addressAnswers(question.name, records, 'AAAA', ttl));
  if (type === 'SRV' || type === 'ANY') {
    for (const srv of records.srv) {
      answers.push({
        type: 'SRV',
        name: question.name,
        ttl,
        class: 'IN',
        data: { priority: 0, weight: 100, port: srv.port, target: srv.target },
      });
      const target = index.names.get(srv.target);
      if (target) {
        additionals.push(...addressAnswers(srv.target, target, 'A', ttl));
        additionals.push(...addressAnswers(srv.target, target, 'AAAA', ttl));
      }
    }
  }
  if (answers.length === 0) return respond(query, RCODE.NOERROR, negative);
  return respond(query, RCODE.NOERROR, { answers, additionals });
}

/** The FORMERR reply to a packet whose header could be read but whose body could not. */
export function formatError(id: number, opcodeFlags: number): Packet {
  return {
    type: 'response',
    id,
    flags: (opcodeFlags & (0xf << 11)) | RCODE.FORMERR,
    questions: [],
    answers: [],
    authorities: [],
    additionals: [],
  };
}

/**
 * Encodes for UDP: a response larger than the client accepts is sent with TC set and no records
 * (the question and OPT stay), so the resolver retries over TCP.
 */
export function encodeForUdp(response: DnsResponse): Buffer {
  const full = encode(response.packet);
  if (full.length <= response.udpLimit) return full;
  const opt = (response.packet.additionals ?? []).filter((a) => a.type === 'OPT');
  return encode({
    ...response.packet,
    flags: (response.packet.flags ?? 0) | TRUNCATED_RESPONSE,
    answers: [],
    authorities: [],
    additionals: opt,
  });
}
