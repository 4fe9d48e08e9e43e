/**
 * An instance's one connection to its QEMU monitor: the session a start
 * opened (adopt), else connected on first use and again after QEMU restarts,
 * single-flight (callers that ask while a connect is under way share it),
 * every event handed to one listener.
 */
import { QmpClient, type Monitor, type QmpEvent } from './qmp-client';

export interface MonitorLinkOptions {
  socketPath: string;
  /** Wraps the monitor (tests inject faults a real QEMU cannot produce on demand). */
  wrap?: (mon: QmpClient) => Monitor;
  onEvent(e: QmpEvent): void;
}

export class MonitorLink {
  private client: QmpClient | undefined;
  private mon: Monitor | undefined;
  private connecting: Promise<Monitor> | undefined;

  constructor(private readonly opts: MonitorLinkOptions) {}

  /** QEMU's version, once connected. */
  get qemuVersion(): QmpClient['qemuVersion'] | undefined {
    return this.client?.qemuVersion;
  }

  get(): Promise<Monitor> {
    if (this.client && !this.client.closed && this.mon) return Promise.resolve(this.mon);
    if (!this.connecting) {
      this.connecting = this.connect().finally(() => {
        this.connecting = undefined;
      });
    }
    return this.connecting;
  }

  private async connect(): Promise<Monitor> {
    const client = await QmpClient.connect(this.opts.socketPath);
    if (this.client && !this.client.closed && this.mon) {
      client.close(); // a session was handed over meanwhile (adopt)
      return this.mon;
    }
    return this.attach(client);
  }

  /**
   * Takes over a session already open to this QEMU (the one spawnQemu opened
   * to see QEMU come up), so that a start connects once. Call it in the same
   * tick the session was opened in: events are handed on from here.
   */
  adopt(client: QmpClient): void {
    if (this.client !== client) this.client?.close();
    this.attach(client);
  }

  private attach(client: QmpClient): Monitor {
    client.on('event', (e: QmpEvent) => this.opts.onEvent(e));
    this.client = client;
    this.mon = this.opts.wrap ? this.opts.wrap(client) : client;
    return this.mon;
  }

  close(): void {
    this.connecting = undefined;
    this.client?.close();
    this.client = undefined;
    this.mon = undefined;
  }
}
