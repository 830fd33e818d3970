/**
 * The metrics over HTTP: `GET /metrics` answers Prometheus text; anything
 * else is 404. Bound to one address (`vfio-user-ts serve --metrics
 * 127.0.0.1:9464`); it has no authentication, so keep it on loopback or a
 * management network.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { silentLogger } from '../log.js';
import type { MetricsRegistry } from './registry.js';

export interface MetricsHttpOptions {
  host: string;
  /** 0: any free port (see `url`). */
  port: number;
  log?: Logger;
}

export interface MetricsHttpServer {
  /** Where Prometheus scrapes, e.g. http://127.0.0.1:9464/metrics. */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Listen on host:port and serve `registry`. Rejects with the listen error (EADDRINUSE...). */
export async function serveMetrics(registry: MetricsRegistry, options: MetricsHttpOptions): Promise<MetricsHttpServer> {
  const log = options.log ?? silentLogger;
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n');
      return;
    }
    registry.text().then(
      (text) =>
        res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (err: unknown) => {
        log.error({ err }, 'metrics: scrape failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics failed\n');
      },
    );
  });
  // One scrape at a time is all Prometheus does; a slow client must not hold sockets forever.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: options.host, port: options.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'metrics: server error'));
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}/metrics`;
  log.info({ url }, 'metrics: listening');
  return {
    url,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
