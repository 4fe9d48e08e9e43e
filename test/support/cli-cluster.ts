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

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

function startDaemon(args: string[], ready: RegExp, logFile: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const log = fs.createWriteStream(logFile, { flags: 'a' });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no "${ready}" within 30 s: ${out}`)), 30_000);
    child.stdout?.on('data', (d: Buffer) => {
      log.write(d);
      out += d.toString();
      if (ready.test(out)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.stderr?.on('data', (d: Buffer) => log.write(d));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${path.basename(args[0])} exited with ${code}: ${out}`));
    });
  });
}

async function stopDaemon(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

export class TestCluster {
  readonly work = tempDir('cluster');
  readonly clusterDir = path.join(this.work, 'cluster');
  private master: ChildProcess | undefined;
  private readonly nodeds: ChildProcess[] = [];

  /** Runs a CLI command to completion (synchronously). */
  gnt(prog: string, ...args: string[]): CliRun {
    const r = spawnSync(process.execPath, [CLI, prog, ...args, '--cluster-dir', this.clusterDir], { encoding: 'utf8', timeout: 180_000 });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
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
    assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    return r;
  }

  json<T>(r: CliRun): T {
    return JSON.parse(this.ok(r).stdout) as T;
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
