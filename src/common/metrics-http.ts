/**
 * The plain HTTP endpoint a daemon's Prometheus metrics are scraped from
 * (--metrics-listen HOST:PORT): GET /metrics answers the registry's text
 * format, anything else 404. No TLS: bind it to a management address.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import type { Registry } from 'prom-client';

export class MetricsAddressError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MetricsAddressError';
  }
}

export interface MetricsAddress {
  host: string;
  port: number;
}

/** Parses HOST:PORT, [IPV6]:PORT; port 0 means any free port. */
export function parseMetricsAddress(text: string, option = '--metrics-listen'): MetricsAddress {
  const shown = JSON.stringify(text.slice(0, 80));
  const m = /^\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})$/.exec(text) ?? /^([A-Za-z0-9.-]+):([0-9]{1,5})$/.exec(text);
  if (!m) throw new MetricsAddressError(`${option} ${shown} is not HOST:PORT or [IPV6]:PORT`);
  const [, host, portText] = m;
  const port = Number(portText);
  if (port > 65535) throw new MetricsAddressError(`${option} ${shown}: port ${port} is above 65535`);
  if (text.startsWith('[') && net.isIPv6(host) === false) throw new MetricsAddressError(`${option} ${shown}: "${host}" is not an IPv6 address`);
  if (!text.startsWith('[') && /^[0-9.]+$/.test(host) && !net.isIPv4(host)) throw new MetricsAddressError(`${option} ${shown}: "${host}" is not an IPv4 address`);
  return { host, port };
}

export interface MetricsServer {
  /** The bound address, as HOST:PORT ([HOST]:PORT for IPv6). */
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Starts serving `registry`; rejects with a MetricsAddressError naming the address if it cannot bind. */
export async function startMetricsServer(registry: Registry, addr: MetricsAddress, option = '--metrics-listen'): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' || url !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('not found: metrics are at GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (body) => {
        res.writeHead(200, { 'Content-Type': registry.contentType });
        res.end(body);
      },
      (err: unknown) => {
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
        res.end(`cannot collect metrics: ${err instanceof Error ? err.message : String(err)}\n`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const where = addr.host.includes(':') ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
      const why = err.code === 'EADDRINUSE' ? 'the port is in use' : err.code === 'EADDRNOTAVAIL' ? 'the address is not on this host' : err.message;
      reject(new MetricsAddressError(`${option} ${where}: cannot listen: ${why}`));
    });
    server.listen(addr.port, addr.host, () => resolve());
  });
  const bound = server.address() as net.AddressInfo;
  const address = bound.family === 'IPv6' ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`;
  return {
    address,
    port: bound.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
