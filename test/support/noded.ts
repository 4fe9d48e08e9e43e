/** Running a real gnt-noded process (dist/src/noded/main.js) for tests, with a fresh cluster PKI. */
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { MASTER_ROLE, nodeRole } from '../../src/common/cert-roles';
import { createCa, issueCertificate, type Identity } from '../../src/common/pki';
import { GUEST_DIR, REPO } from './guest';

export const NODED_MAIN = path.join(REPO, 'dist/src/noded/main.js');

export interface TestPki {
  /** The node daemon's identity (cluster CA). */
  node: Identity;
  /** A client (the master) with a certificate from the cluster CA. */
  client: Identity;
  /** A client that trusts the cluster CA but whose certificate comes from another CA. */
  stranger: Identity;
  /** Another node's certificate from the cluster CA (role node:other-node): refused by node daemons. */
  otherNode: Identity;
}

export function makePki(dir: string, nodeName: string): TestPki {
  const ca = createCa(path.join(dir, 'ca'), 'gnt-test-cluster-ca');
  const other = createCa(path.join(dir, 'other-ca'), 'some-other-ca');
  const node = issueCertificate(ca, path.join(dir, 'certs'), nodeName, nodeRole(nodeName));
  const client = issueCertificate(ca, path.join(dir, 'certs'), 'master', MASTER_ROLE);
  const stranger = issueCertificate(other, path.join(dir, 'other-certs'), 'stranger', MASTER_ROLE);
  const otherNode = issueCertificate(ca, path.join(dir, 'certs'), 'other-node', nodeRole('other-node'));
  return {
    node: { ...node, ca: ca.cert }, client: { ...client, ca: ca.cert }, stranger: { ...stranger, ca: ca.cert }, otherNode: { ...otherNode, ca: ca.cert },
  };
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface NodedOptions {
  name: string;
  dataDir: string;
  storageDir: string;
  identity: Identity;
  port: number;
  /** More gnt-noded arguments, such as ['--cpu-overcommit-ratio', '1']. */
  args?: string[];
  /** More environment, such as { GNT_NODED_CRASH_POINT: 'after-hotplug-applied' }. */
  env?: Record<string, string>;
}

export interface Noded {
  proc: ChildProcess;
  pid: number;
  address: string;
  /** Everything the daemon wrote to stderr so far (one RPC per line). */
  log(): string;
  /** Sends `signal` to the daemon (by its pid) and waits for it to exit. */
  kill(signal: NodeJS.Signals): Promise<number | null>;
}

/** Spawns the daemon and waits for its "listening on" line. */
export function spawnNoded(o: NodedOptions): Promise<Noded> {
  const listen = `127.0.0.1:${o.port}`;
  const proc = spawn(
    process.execPath,
    [NODED_MAIN, '--name', o.name, '--listen', listen, '--data-dir', o.dataDir, '--storage-dir', o.storageDir, '--image-dir', GUEST_DIR,
      '--ca', o.identity.ca, '--cert', o.identity.cert, '--key', o.identity.key, ...(o.args ?? [])],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...(o.env ?? {}) } },
  );
  let stdout = '';
  let stderr = '';
  proc.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const noded: Noded = {
    proc,
    pid: proc.pid as number,
    address: listen,
    log: () => stderr,
    async kill(signal) {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      process.kill(proc.pid as number, signal);
      return exited;
    },
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void noded.kill('SIGKILL');
      reject(new Error(`gnt-noded did not say it was listening within 15 s; stderr: ${stderr}`));
    }, 15_000);
    proc.stdout?.on('data', (b: Buffer) => {
      stdout += b.toString();
      if (stdout.includes(`gnt-noded ${o.name} listening on ${listen}`)) {
        clearTimeout(timer);
        resolve(noded);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`gnt-noded exited (${code}) before listening; stderr: ${stderr}`));
    });
  });
}
