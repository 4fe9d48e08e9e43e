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

/** The pid of this instance's QEMU if it is alive, else undefined. */
export function runningPid(paths: InstancePaths): number | undefined {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(paths.pidFile, 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/\) Z /.test(stat)) return undefined;
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes(paths.qmpSocket) ? pid : undefined;
  } catch {
    return undefined;
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
 */
export async function spawnQemu(
  binary: string,
  args: string[],
  fds: number[],
  paths: InstancePaths,
  timeoutMs = 30_000,
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
          const probe = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 5000 });
          probe.close();
          if (child.pid === undefined) break;
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
