import { createServer as createHttpServer, type Server as HttpServer, type IncomingMessage } from 'node:http';
import { type AddressInfo, createServer, type Server } from 'node:net';

/** A TCP listener on 127.0.0.1 that accepts and closes. */
export async function tcpListener(port = 0): Promise<Server & { port: number }> {
  const server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return Object.assign(server, { port: (server.address() as AddressInfo).port });
}

export async function httpServer(
  handler: (req: IncomingMessage, res: import('node:http').ServerResponse) => void,
): Promise<HttpServer & { port: number }> {
  const server = createHttpServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return Object.assign(server, { port: (server.address() as AddressInfo).port });
}

export function close(server: {
  close(cb?: (err?: Error) => void): unknown;
  closeAllConnections?: () => void;
}): Promise<void> {
  server.closeAllConnections?.();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** A port on 127.0.0.1 with nothing listening (bound, read, released). */
export async function closedPort(): Promise<number> {
  const server = await tcpListener();
  const { port } = server;
  await close(server);
  return port;
}
