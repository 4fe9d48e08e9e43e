/**
 * A whole cluster as real processes for end-to-end tests: gnt-cluster init,
 * gnt-masterd, any number of gnt-noded, and the CLI run as child processes.
 */
import * as assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { freePort } from './noded';
import { REPO, tempDir } from './guest';

const CLI = path.join(REPO, 'dist/src/master/cli/main.js');
const NODED = path.join(REPO, 'dist/src/noded/main.js');

export const CLI_MAIN = CLI;
export const NODED_MAIN = NODED;

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** A long-running process (gnt-masterd, gnt-noded) started by a test. */
export interface Daemon {
  child: ChildProcess;
  /** Everything it wrote on stderr so far. */
  stderr(): string;
  /** Resolves with the exit code and signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `node ARGS` and resolves once it prints a line matching `ready`. */
export function startDaemon(args: string[], ready: RegExp, logFile: string, env: Record<string, string> = {}): Promise<Daemon> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const log = fs.createWriteStream(logFile, { flags: 'a' });
    let out = '';
    let err = '';
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
      child.once('exit', (code, signal) => r({ code, signal })),
    );
    const timer = setTimeout(() => reject(new Error(`no "${ready}" within 30 s: ${out}${err}`)), 30_000);
    child.stdout?.on('data', (d: Buffer) => {
      log.write(d);
      out += d.toString();
      if (ready.test(out)) {
        clearTimeout(timer);
        resolve({ child, stderr: () => err, exited });
      }
    });
    child.stderr?.on('data', (d: Buffer) => {
      log.write(d);
      err += d.toString();
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${path.basename(args[0])} exited with ${code ?? signal}: ${out}${err}`));
    });
  });
}

/** Signals the daemon (by its own handle) and waits for it to exit. */
export async function stopDaemon(d: Daemon | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!d || d.child.exitCode !== null || d.child.signalCode !== null) return;
  d.child.kill(signal);
  await d.exited;
}

/** Runs one gnt-* command to completion against the cluster in `clusterDir`. */
export function runCli(clusterDir: string, prog: string, ...args: string[]): CliRun {
  const r = spawnSync(process.execPath, [CLI, prog, ...args, '--cluster-dir', clusterDir], { encoding: 'utf8', timeout: 180_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function expectOk(r: CliRun): CliRun {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

export function expectJson<T>(r: CliRun): T {
  return JSON.parse(expectOk(r).stdout) as T;
}

export class TestCluster {
  readonly work = tempDir('cluster');
  readonly clusterDir = path.join(this.work, 'cluster');
  private master: Daemon | undefined;
  private readonly nodeds: Daemon[] = [];

  /** Runs a CLI command to completion (synchronously). */
  gnt(prog: string, ...args: string[]): CliRun {
    return runCli(this.clusterDir, prog, ...args);
  }

  /** Runs a CLI command as a concurrent process. */
  gntAsync(prog: string, ...args: string[]): Promise<CliRun> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [CLI, prog, ...args, '--cluster-dir', this.clusterDir], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      child.once('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  }

  ok(r: CliRun): CliRun {
    return expectOk(r);
  }

  json<T>(r: CliRun): T {
    return expectJson<T>(r);
  }

  async init(): Promise<void> {
    const port = await freePort();
    this.ok(this.gnt('gnt-cluster', 'init', '--master-address', `127.0.0.1:${port}`, '--name', 'e2e'));
    this.master = await startDaemon([CLI, 'gnt-masterd', '--cluster-dir', this.clusterDir], /gnt-masterd listening on/, path.join(this.work, 'masterd.log'));
  }

  /** Starts a node daemon with a certificate issued by the cluster, and adds it. */
  async addNode(name: string): Promise<void> {
    const certs = path.join(this.work, `${name}-certs`);
    this.ok(this.gnt('gnt-cluster', 'issue-node-cert', name, '--out', certs));
    const port = await freePort();
    const data = path.join(this.work, `${name}-data`);
    const storage = path.join(this.work, `${name}-storage`);
    fs.mkdirSync(data, { recursive: true });
    fs.mkdirSync(storage, { recursive: true });
    const noded = await startDaemon(
      [NODED, '--name', name, '--listen', `127.0.0.1:${port}`, '--data-dir', data, '--storage-dir', storage,
        '--ca', path.join(certs, 'ca.pem'), '--cert', path.join(certs, 'node.pem'), '--key', path.join(certs, 'node.key')],
      new RegExp(`gnt-noded ${name} listening on`),
      path.join(this.work, `${name}.log`),
    );
    this.nodeds.push(noded);
    this.ok(this.gnt('gnt-node', 'add', name, '--address', `127.0.0.1:${port}`));
  }

  async destroy(): Promise<void> {
    for (const n of this.nodeds) await stopDaemon(n);
    if (this.master) await stopDaemon(this.master);
    fs.rmSync(this.work, { recursive: true, force: true });
  }
}
