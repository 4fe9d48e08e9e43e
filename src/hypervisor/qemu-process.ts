/**
 * Starting and stopping the QEMU process of an instance. QEMU runs as a
 * detached child (not -daemonize, which the seccomp sandbox forbids), so it
 * outlives the node daemon; it is found again by its pid file, and only a pid
 * whose command line names this instance's monitor socket is ever signalled.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { InstanceStateError } from './errors';
import type { InstancePaths } from './instance-paths';
import { QmpClient } from './qmp-client';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The pid of this instance's QEMU if it is alive, else undefined: the pid file, /proc/PID/stat and /proc/PID/cmdline. */
export function runningPid(paths: InstancePaths): number | undefined {
  return verifiedQemu(paths)?.pid;
}

/** A process as /proc names it: its pid and its start time (stat field 22, clock ticks since boot). */
interface ProcessIdentity {
  pid: number;
  startTime: string;
}

function verifiedQemu(paths: InstancePaths): ProcessIdentity | undefined {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(paths.pidFile, 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  const startTime = liveStartTime(pid);
  if (startTime === undefined) return undefined;
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    // Read after the cmdline as well: a pid that died and was reused between the two reads shows here.
    return cmdline.includes(paths.qmpSocket) && liveStartTime(pid) === startTime ? { pid, startTime } : undefined;
  } catch {
    return undefined;
  }
}

/** The start time of a live (not zombie) process, from one read of /proc/PID/stat; undefined if there is none. */
function liveStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return statStartTime(stat);
}

/** Stat field 22 of a /proc/PID/stat line, undefined for a zombie or dead process (or a line that is not one). */
export function statStartTime(stat: string): string | undefined {
  // "pid (comm) state ppid ..." with comm possibly holding spaces and ")": fields after the last ")".
  const close = stat.lastIndexOf(')');
  if (close < 0) return undefined;
  const fields = stat.slice(close + 2).trim().split(' ');
  if (fields.length < 20 || fields[0] === 'Z' || fields[0] === 'X') return undefined;
  return fields[19]; // field 22: fields[0] is field 3
}

/**
 * The pid of an instance's QEMU, cheap to ask often: once verified in full
 * (runningPid), a pid is remembered with its start time, and later calls
 * only check, with one read of /proc/PID/stat, that this very process still
 * lives. A QEMU that died (gone or a zombie) or whose pid now names another
 * process (another start time) is never taken: the full check runs again.
 */
export class QemuPid {
  private known: ProcessIdentity | undefined;

  constructor(private readonly paths: InstancePaths) {}

  get(): number | undefined {
    const k = this.known;
    if (k && liveStartTime(k.pid) === k.startTime) return k.pid;
    this.known = verifiedQemu(this.paths);
    return this.known?.pid;
  }

  /** Drops what is remembered (QEMU stopped, the monitor was closed). */
  forget(): void {
    this.known = undefined;
  }
}

function logTail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-5).join(' | ');
  } catch {
    return '';
  }
}

/**
 * Spawns QEMU with `fds` as its fds 3, 4, ... and waits until its monitor
 * answers. Returns the pid. The caller still owns (and closes) `fds`.
 * `onMonitor` gets the QMP session that answered, in the same tick it was
 * opened (no event is missed); without it the session is closed.
 */
export async function spawnQemu(
  binary: string,
  args: string[],
  fds: number[],
  paths: InstancePaths,
  timeoutMs = 30_000,
  onMonitor?: (client: QmpClient) => void,
): Promise<number> {
  for (const f of [paths.qmpSocket, paths.pidFile]) fs.rmSync(f, { force: true });
  const log = fs.openSync(paths.qemuLog, 'a', 0o600);
  let exited: string | undefined;
  try {
    const child = spawn(binary, args, { detached: true, stdio: ['ignore', log, log, ...fds] });
    child.on('exit', (code, signal) => (exited = signal ? `signal ${signal}` : `exit code ${code}`));
    child.on('error', (err) => (exited = err.message));
    child.unref();
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (exited) break;
      if (fs.existsSync(paths.qmpSocket)) {
        try {
          // Handed over: the session's default command timeout is the monitor's (QmpClient's default).
          const probe = await QmpClient.connect(paths.qmpSocket, onMonitor ? {} : { timeoutMs: 5000 });
          if (child.pid === undefined) {
            probe.close();
            break;
          }
          if (onMonitor) onMonitor(probe);
          else probe.close();
          return child.pid;
        } catch {
          /* not ready yet */
        }
      }
      await sleep(25);
    }
    if (child.pid && !exited) process.kill(child.pid, 'SIGKILL');
    throw new InstanceStateError(
      `QEMU for ${paths.dir} did not start (${exited ?? `no monitor after ${timeoutMs} ms`}): ${logTail(paths.qemuLog)}`,
    );
  } finally {
    fs.closeSync(log);
  }
}

/** Waits for `pid` to disappear; SIGKILLs it after `timeoutMs`. */
export async function waitForExit(paths: InstancePaths, pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (runningPid(paths) !== pid) return;
    await sleep(20);
  }
  if (runningPid(paths) === pid) process.kill(pid, 'SIGKILL');
  while (runningPid(paths) === pid) await sleep(20);
}
