/**
 * The master's local unix socket for the CLI (as Ganeti's luxi socket):
 * by default CLUSTER_DIR/masterd.sock, mode 0600, in a directory only the
 * master's user (root) can enter. A call on it carries no certificate: the
 * caller is the local administrator, with the rights of the cluster's CLI
 * certificate (common/cert-roles.ts LOCAL_ADMIN). Remote clients and nodes
 * keep mutual TLS on the master's TCP address.
 *
 * Installing it never hijacks a live master and never leaves a socket with
 * looser permissions at the final path:
 *  1. the directory must belong to this process's user and give group and
 *     others no access at all;
 *  2. the server binds a temporary name in that directory, which is then
 *     chmod 0600;
 *  3. the temporary name is hard-linked to the final one, which fails if
 *     the final name exists; then an existing socket there is probed: one
 *     that accepts a connection belongs to a live master, and start-up
 *     fails; one that refuses is stale (a killed master's) and is removed,
 *     and the link is tried again; anything but a socket there is an error.
 * At a clean stop, the final name is removed if it is still this master's
 * socket (same inode).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

/** Longest unix socket path Linux accepts (sun_path is 108 bytes, NUL included). */
export const MAX_SOCKET_PATH_BYTES = 107;

/** How long a probe of an existing socket may take before it is taken as live. */
const PROBE_TIMEOUT_MS = 1000;

export class LocalSocketError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LocalSocketError';
  }
}

const DISABLE_HINT = 'or start gnt-masterd with --local-socket none';

/** Refuses a directory that anyone but this process's user could enter. */
export function checkSocketDir(dir: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (err) {
    throw new LocalSocketError(`cannot use ${dir} for the master's local socket: ${(err as Error).message}`);
  }
  const uid = process.geteuid?.() ?? 0;
  if (!st.isDirectory()) throw new LocalSocketError(`${dir} is not a directory; the master's local socket needs one (${DISABLE_HINT})`);
  if (st.uid !== uid)
    throw new LocalSocketError(`${dir} belongs to uid ${st.uid}, not to the master's uid ${uid}: the local socket needs a directory only the master's user can enter (${DISABLE_HINT})`);
  if ((st.mode & 0o077) !== 0)
    throw new LocalSocketError(
      `${dir} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: the local socket needs a directory only its owner can enter (chmod 700 ${dir}, ${DISABLE_HINT})`,
    );
}

/** "live" when something accepts connections on `socketPath`, "stale" when it refuses, "gone" when it vanished. */
export function probeSocket(socketPath: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<'live' | 'stale' | 'gone'> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    const done = (result: 'live' | 'stale' | 'gone' | Error) => {
      clearTimeout(timer);
      s.destroy();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    // A master that does not even accept within the timeout is still not ours to replace.
    const timer = setTimeout(() => done('live'), timeoutMs);
    s.once('connect', () => done('live'));
    s.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') done('stale');
      else if (err.code === 'ENOENT') done('gone');
      else done(new LocalSocketError(`cannot probe ${socketPath}: ${err.message}`));
    });
  });
}

/**
 * Fails when a live master answers on `socketPath`: gnt-masterd checks this
 * before it opens the configuration, so a second master stops before it
 * touches anything (installSocket checks again when it binds).
 */
export async function refuseLiveMaster(socketPath: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socketPath);
  } catch {
    return;
  }
  if (st.isSocket() && (await probeSocket(socketPath)) === 'live')
    throw new LocalSocketError(`another gnt-masterd is serving on ${socketPath}; stop it first (${DISABLE_HINT})`);
}

/** What an installed socket needs at a clean stop. */
export interface InstalledSocket {
  path: string;
  /** Removes the socket's name if it is still this one (not a later master's). */
  remove(): void;
}

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/**
 * Gives the socket bound at `tmpPath` its final name `finalPath` (see the
 * module comment); removes `tmpPath` in every case. `report` is told about
 * a stale socket that was removed.
 */
export async function installSocket(tmpPath: string, finalPath: string, report?: (line: string) => void): Promise<InstalledSocket> {
  try {
    fs.chmodSync(tmpPath, 0o600);
    const ino = fs.lstatSync(tmpPath).ino;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        fs.linkSync(tmpPath, finalPath);
        return {
          path: finalPath,
          remove: () => {
            try {
              if (fs.lstatSync(finalPath).ino === ino) fs.unlinkSync(finalPath);
            } catch {
              /* already gone */
            }
          },
        };
      } catch (err) {
        if (errnoOf(err) !== 'EEXIST') throw new LocalSocketError(`cannot create ${finalPath}: ${(err as Error).message}`);
      }
      let st: fs.Stats;
      try {
        st = fs.lstatSync(finalPath);
      } catch {
        continue; // removed meanwhile: link again
      }
      if (!st.isSocket()) throw new LocalSocketError(`${finalPath} exists and is not a socket; remove it (${DISABLE_HINT})`);
      const state = await probeSocket(finalPath);
      if (state === 'live') throw new LocalSocketError(`another gnt-masterd is serving on ${finalPath}; stop it first (${DISABLE_HINT})`);
      if (state === 'stale') {
        try {
          if (fs.lstatSync(finalPath).ino === st.ino) fs.unlinkSync(finalPath);
        } catch {
          /* removed meanwhile */
        }
        report?.(`removed the stale socket ${finalPath} of an earlier master`);
      }
    }
    throw new LocalSocketError(`${finalPath} keeps reappearing; is another gnt-masterd starting? (${DISABLE_HINT})`);
  } finally {
    fs.rmSync(tmpPath, { force: true });
  }
}

/** The temporary name a socket is bound at before installSocket (same directory, this pid). */
export function tmpSocketPath(finalPath: string): string {
  return path.join(path.dirname(finalPath), `.${path.basename(finalPath)}.${process.pid}.tmp`);
}

/** Refuses a path that is not absolute or too long for a unix socket. */
export function checkSocketPath(socketPath: string): void {
  if (!path.isAbsolute(socketPath)) throw new LocalSocketError(`the local socket path must be absolute, not "${socketPath}"`);
  const longest = Math.max(Buffer.byteLength(socketPath), Buffer.byteLength(tmpSocketPath(socketPath)));
  if (longest > MAX_SOCKET_PATH_BYTES)
    throw new LocalSocketError(`the local socket path ${socketPath} is too long for a unix socket (${longest} of at most ${MAX_SOCKET_PATH_BYTES} bytes with its temporary name); give a shorter --local-socket`);
}
