/**
 * The authoritative DNS responder's I/O: one UDP socket and one TCP listener on the same address and
 * port, answering from the current DnsIndex (swapped atomically with setIndex()). TCP connections
 * carry length-prefixed messages (RFC 1035 4.2.2), several per connection, closed after an idle time.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { type AddressInfo, createServer, isIPv6, type Server, type Socket } from 'node:net';
import { decode, encode } from 'dns-packet';
import type { Logger } from 'pino';
import { answerQuery, type DnsIndex, encodeForUdp, formatError } from './zone';

export interface DnsServerOptions {
  readonly logger: Logger;
  readonly index: DnsIndex;
  /** Idle TCP connections are closed after this (default 10s). */
  readonly tcpIdleMs?: number;
  /** Concurrent TCP connections at most (default 256). */
  readonly maxTcpConnections?: number;
}

export interface DnsServerStats {
  udpQueries: number;
  tcpQueries: number;
  formErrors: number;
}

export class DnsServer {
  private index: DnsIndex;
  private udp: UdpSocket | undefined;
  private tcp: Server | undefined;
  private readonly log: Logger;
  private readonly connections = new Set<Socket>();
  readonly stats: DnsServerStats = { udpQueries: 0, tcpQueries: 0, formErrors: 0 };

  constructor(private readonly options: DnsServerOptions) {
    this.index = options.index;
    this.log = options.logger.child({ component: 'dns' });
  }

  /** Replaces the zone; queries after this call see the new one. */
  setIndex(index: DnsIndex): void {
    this.index = index;
  }

  /**
   * Binds UDP and TCP on host:port. With port 0 the kernel picks a port for TCP and UDP binds the
   * same one (retried a few times if that UDP port is taken). Resolves with the bound port.
   */
  async listen(host: string, port: number): Promise<number> {
    if (this.tcp || this.udp) throw new Error('dns server already listening');
    for (let attempt = 0; attempt < 10; attempt++) {
      const tcp = await this.listenTcp(host, port);
      const bound = (tcp.address() as AddressInfo).port;
      try {
        this.udp = await this.listenUdp(host, bound);
        this.tcp = tcp;
        this.log.info({ host, port: bound }, 'dns responder listening (udp+tcp)');
        return bound;
      } catch (err) {
        await new Promise<void>((resolve) => tcp.close(() => resolve()));
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || port !== 0) throw err;
      }
    }
    throw new Error(`dns: no port free for both UDP and TCP on ${host}`);
  }

  async close(): Promise<void> {
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    for (const socket of this.connections) socket.destroy();
    await Promise.all([
      udp ? new Promise<void>((resolve) => udp.close(() => resolve())) : undefined,
      tcp ? new Promise<void>((resolve) => tcp.close(() => resolve())) : undefined,
    ]);
  }

  /** Answers one raw query, for the TCP and UDP paths alike; undefined means drop it. */
  private handle(
    message: Buffer,
    transport: 'udp' | 'tcp',
  ): { response: ReturnType<typeof answerQuery> } | { raw: Buffer } | undefined {
    if (transport === 'udp') this.stats.udpQueries++;
    else this.stats.tcpQueries++;
    let query: ReturnType<typeof decode>;
    try {
      query = decode(message);
    } catch {
      this.stats.formErrors++;
      // Too short for a header: nothing to answer to.
      if (message.length < 12) return undefined;
      return { raw: encode(formatError(message.readUInt16BE(0), message.readUInt16BE(2))) };
    }
    if (query.type === 'response') return undefined;
    return { response: answerQuery(this.index, query) };
  }

  private listenUdp(host: string, port: number): Promise<UdpSocket> {
    const socket = createSocket({ type: isIPv6(host) ? 'udp6' : 'udp4' });
    socket.on('message', (message, rinfo) => {
      try {
        const result = this.handle(message, 'udp');
        if (!result) return;
        const out =
          'raw' in result ? result.raw : result.response ? encodeForUdp(result.response) : undefined;
        if (out) socket.send(out, rinfo.port, rinfo.address);
      } catch (err) {
        this.log.error({ err }, 'dns udp query failed');
      }
    });
    return new Promise((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, host, () => {
        socket.off('error', reject);
        socket.on('error', (err) => this.log.error({ err }, 'dns udp socket error'));
        resolve(socket);
      });
    });
  }

  private listenTcp(host: string, port: number): Promise<Server> {
    const server = createServer((socket) => this.serveTcp(socket));
    server.maxConnections = this.options.maxTcpConnections ?? 256;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        server.on('error', (err) => this.log.error({ err }, 'dns tcp listener error'));
        resolve(server);
      });
    });
  }

  private serveTcp(socket: Socket): void {
    this.connections.add(socket);
    socket.setTimeout(this.options.tcpIdleMs ?? 10_000, () => socket.destroy());
    socket.on('close', () => this.connections.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const length = buffered.readUInt16BE(0);
        if (buffered.length < 2 + length) break;
        const message = buffered.subarray(2, 2 + length);
        buffered = buffered.subarray(2 + length);
        try {
          const result = this.handle(message, 'tcp');
          if (!result) {
            socket.destroy();
            return;
          }
          const out =
            'raw' in result ? result.raw : result.response ? encode(result.response.packet) : undefined;
          if (!out) continue;
          const framed = Buffer.alloc(2 + out.length);
          framed.writeUInt16BE(out.length, 0);
          out.copy(framed, 2);
          socket.write(framed);
        } catch (err) {
          this.log.error({ err }, 'dns tcp query failed');
          socket.destroy();
          return;
        }
      }
    });
  }
}
