/**
 * An instance's serial console: QEMU serves it on a unix socket in the
 * instance directory (qemu-command.ts nodeLocalArgs: `-chardev socket,...,
 * server=on,wait=off,logfile=console.log`), and logs every byte the guest
 * writes to console.log from its start, whether or not a client is connected.
 *
 * - openSerialConsole: an interactive session on the socket. QEMU serves one
 *   client at a time (a second connect only waits in the listen backlog), so
 *   this process keeps one session per socket and refuses a second one with
 *   ConsoleInUseError.
 * - tailConsoleLog: the last N bytes of console.log, then what follows,
 *   without touching the socket (a read-only view any number may run).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { HypervisorError } from './errors';

/** Another session holds the console (QEMU serves one client). */
export class ConsoleInUseError extends HypervisorError {
  constructor(instance: string) {
    super('RESOURCE_EXHAUSTED', `the console of ${instance} is in use by another session: leave that one first (Ctrl-]) or use "gnt-instance console --tail ${instance}" to watch it`);
  }
}

/** The console socket is not there or does not answer (instance not running). */
export class ConsoleUnavailableError extends HypervisorError {
  constructor(instance: string, reason: string) {
    super('FAILED_PRECONDITION', `the console of ${instance} cannot be opened (${reason}): is the instance running?`);
  }
}

export interface SerialConsoleSession {
  /** Sends bytes to the guest's serial port. */
  write(data: Buffer): void;
  /** Disconnects from QEMU (the next session can then attach). Idempotent. */
  close(): void;
}

export interface SessionCallbacks {
  onData(data: Buffer): void;
  /** Called once when the session ends: `reason` says why (closed by us, QEMU went away, an error). */
  onEnd(reason: string): void;
}

/** Sockets with a session in this process. */
const busy = new Set<string>();

/** Whether a session holds the console at `socketPath` now (for tests and status). */
export const consoleBusy = (socketPath: string): boolean => busy.has(socketPath);

export function openSerialConsole(instance: string, socketPath: string, cb: SessionCallbacks): Promise<SerialConsoleSession> {
  if (busy.has(socketPath)) return Promise.reject(new ConsoleInUseError(instance));
  if (!fs.existsSync(socketPath)) return Promise.reject(new ConsoleUnavailableError(instance, `no console socket at ${socketPath}`));
  busy.add(socketPath);
  return new Promise<SerialConsoleSession>((resolve, reject) => {
    const sock = net.createConnection(socketPath);
    let connected = false;
    let ended = false;
    let closing = false;
    const finish = (reason: string): void => {
      if (ended) return;
      ended = true;
      busy.delete(socketPath);
      sock.destroy();
      if (connected) cb.onEnd(reason);
    };
    sock.on('connect', () => {
      connected = true;
      resolve({
        write: (data) => {
          if (!ended) sock.write(data);
        },
        close: () => {
          closing = true;
          finish('the session was closed');
        },
      });
    });
    sock.on('data', (d: Buffer) => cb.onData(d));
    sock.on('error', (err) => {
      if (!connected) {
        finish(err.message);
        reject(new ConsoleUnavailableError(instance, err.message));
      } else finish(`the console connection failed: ${err.message}`);
    });
    sock.on('close', () => finish(closing ? 'the session was closed' : `the instance ${instance} stopped (QEMU closed its console)`));
  });
}

export interface ConsoleTail {
  stop(): void;
}

/** How often the tail looks for new output when no file event came. */
const TAIL_POLL_MS = 200;

/**
 * Calls onData with the last `replayBytes` of `logPath`, then with each new
 * piece the guest writes, until stop(). A log that shrinks (QEMU restarted
 * and truncated it) is read again from its start.
 */
export function tailConsoleLog(logPath: string, replayBytes: number, onData: (data: Buffer) => void): ConsoleTail {
  let pos = 0;
  try {
    pos = Math.max(0, fs.statSync(logPath).size - Math.max(0, replayBytes));
  } catch {
    pos = 0;
  }
  let stopped = false;
  let reading = false;
  const readMore = (): void => {
    if (stopped || reading) return;
    reading = true;
    try {
      let size: number;
      try {
        size = fs.statSync(logPath).size;
      } catch {
        return;
      }
      if (size < pos) pos = 0;
      if (size === pos) return;
      const fd = fs.openSync(logPath, 'r');
      try {
        const buf = Buffer.alloc(Math.min(size - pos, 1 << 20));
        const n = fs.readSync(fd, buf, 0, buf.length, pos);
        pos += n;
        if (n > 0) onData(buf.subarray(0, n));
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      reading = false;
    }
  };
  readMore();
  const timer = setInterval(readMore, TAIL_POLL_MS);
  return {
    stop: () => {
      stopped = true;
      clearInterval(timer);
    },
  };
}
