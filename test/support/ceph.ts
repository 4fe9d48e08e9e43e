/**
 * A one-node Ceph cluster (scripts/ceph-dev.sh) for the tests that need
 * RBD: startCeph() in a mocha `before`, stopCeph() in the `after`. It runs
 * on 127.0.0.1 of the caller's network namespace. The packages come from
 * scripts/prepare.sh (scripts/ceph-dev.sh install: the tests' namespace
 * reaches no package mirror). If they are missing and cannot be installed,
 * or the cluster does not come up, startCeph() throws with the script's
 * reason: the test fails, it is never skipped.
 */
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { REPO, tempDir } from './guest';

const run = promisify(execFile);
const SCRIPT = path.join(REPO, 'scripts/ceph-dev.sh');

export interface TestCeph {
  /** The directory the cluster lives in (removed by stopCeph). */
  dir: string;
  /** HOST:PORT of the monitor (msgr2). */
  monitors: string;
  pool: string;
  /** The client id without "client." (gnt). */
  clientId: string;
  /** client.<id>'s keyring (0600). */
  keyring: string;
  /** The cluster's own ceph.conf (with the admin keyring): for test-side checks only. */
  conf: string;
}

function field(out: string, key: string): string {
  const m = new RegExp(`^${key}=(.*)$`, 'm').exec(out);
  if (!m) throw new Error(`scripts/ceph-dev.sh printed no ${key}= line:\n${out}`);
  return m[1];
}

/** Bootstraps the cluster in a new temp dir (about 15 s here; installing the packages first adds about 25 s). */
export async function startCeph(): Promise<TestCeph> {
  const dir = path.join(tempDir('ceph'), 'cluster');
  let out: string;
  try {
    out = (await run('bash', [SCRIPT, 'start', dir], { timeout: 600_000, maxBuffer: 16 * 1024 * 1024 })).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    await stopCeph({ dir } as TestCeph).catch(() => undefined);
    throw new Error(
      `the one-node Ceph for this test did not start (scripts/ceph-dev.sh start): ${e.stderr?.trim() || e.message}` +
        ' (the packages are installed by scripts/prepare.sh through "scripts/ceph-dev.sh install", outside the test\'s network namespace)',
    );
  }
  return {
    dir,
    monitors: field(out, 'CEPH_MONITORS'),
    pool: field(out, 'CEPH_POOL'),
    clientId: field(out, 'CEPH_CLIENT'),
    keyring: field(out, 'CEPH_KEYRING'),
    conf: field(out, 'CEPH_CONF'),
  };
}

/** Stops the daemons it recorded and removes the cluster's directory (and the temp dir above it). */
export async function stopCeph(ceph: TestCeph | undefined): Promise<void> {
  if (!ceph) return;
  await run('bash', [SCRIPT, 'stop', ceph.dir], { timeout: 60_000 });
  fs.rmSync(path.dirname(ceph.dir), { recursive: true, force: true });
}

/** The rbd CLI as the test's admin (the cluster's own conf and admin keyring). */
export function rbdAdmin(ceph: TestCeph, ...args: string[]): string {
  return execFileSync('rbd', ['-c', ceph.conf, ...args], { encoding: 'utf8', timeout: 60_000 });
}

/** The images in the pool. */
export function rbdImages(ceph: TestCeph): string[] {
  return rbdAdmin(ceph, 'ls', ceph.pool).split('\n').filter(Boolean);
}

/** The key of the client (as in its keyring), for tests that give it to QEMU directly. */
export function clientKey(ceph: TestCeph): string {
  const m = /^\s*key\s*=\s*(\S+)\s*$/m.exec(fs.readFileSync(ceph.keyring, 'utf8'));
  if (!m) throw new Error(`no key in ${ceph.keyring}`);
  return m[1];
}
