/**
 * The cluster directory (--cluster-dir, $GNT_CLUSTER_DIR, default
 * /var/lib/gnt-hotplug):
 *
 *   cluster.json          cluster name and the master's address (read by the CLI)
 *   config.db             SQLite: configuration and jobs (0600)
 *   pki/ca.pem, ca.key    the cluster CA (key 0600)
 *   pki/master.pem, .key  the master's certificate (server, and client to nodes)
 *   pki/cli.pem, .key     the CLI's client certificate
 *   pki/old-ca-TIME/      an earlier CA kept after renew-crypto --new-ca
 *   masterd.sock          the master's local socket for the CLI (0600; local-socket.ts)
 *
 * Each certificate carries its role as a SAN URI (common/cert-roles.ts):
 * urn:gnt-hotplug:master, urn:gnt-hotplug:cli, urn:gnt-hotplug:node:NAME.
 *
 * Directories are 0700, keys and the database 0600.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Identity } from '../common/pki';
import { checkAddress, checkName } from './validate';

/*
 * Certificates, the database and the role names are loaded only by the
 * methods that make a cluster or certificates: every CLI command resolves
 * a ClusterDir, few of them write one.
 */
const pki = () => require('../common/pki') as typeof import('../common/pki');
const roles = () => require('../common/cert-roles') as typeof import('../common/cert-roles');
const db = () => require('./config/db') as typeof import('./config/db');
const configStore = () => require('./config/config-store') as typeof import('./config/config-store');

export const DEFAULT_CLUSTER_DIR = '/var/lib/gnt-hotplug';

export interface ClusterFile {
  name: string;
  master_address: string;
  created_at: string;
}

/** The names in the master's certificate: localhost, 127.0.0.1 and the host of its address. */
function masterAltNames(host: string): { dns: string[]; ip: string[] } {
  const isIp = /^[0-9.]+$|:/.test(host);
  return { dns: ['localhost', ...(isIp ? [] : [host])], ip: ['127.0.0.1', ...(isIp && host !== '127.0.0.1' ? [host] : [])] };
}

export class ClusterDir {
  constructor(readonly dir: string) {}

  static resolve(option: string | undefined): ClusterDir {
    return new ClusterDir(path.resolve(option || process.env.GNT_CLUSTER_DIR || DEFAULT_CLUSTER_DIR));
  }

  get clusterFile(): string {
    return path.join(this.dir, 'cluster.json');
  }
  get dbFile(): string {
    return path.join(this.dir, 'config.db');
  }
  get pkiDir(): string {
    return path.join(this.dir, 'pki');
  }
  get ca(): { cert: string; key: string } {
    return { cert: path.join(this.pkiDir, 'ca.pem'), key: path.join(this.pkiDir, 'ca.key') };
  }
  get masterIdentity(): Identity {
    return { ca: this.ca.cert, cert: path.join(this.pkiDir, 'master.pem'), key: path.join(this.pkiDir, 'master.key') };
  }
  /** The master's local unix socket for the CLI (master/local-socket.ts). */
  get localSocket(): string {
    return path.join(this.dir, 'masterd.sock');
  }
  get cliIdentity(): Identity {
    return { ca: this.ca.cert, cert: path.join(this.pkiDir, 'cli.pem'), key: path.join(this.pkiDir, 'cli.key') };
  }

  exists(): boolean {
    return fs.existsSync(this.clusterFile);
  }

  readClusterFile(): ClusterFile {
    if (!this.exists())
      throw new Error(`no cluster in ${this.dir}: run "gnt-cluster init" first, or give --cluster-dir (or GNT_CLUSTER_DIR)`);
    return JSON.parse(fs.readFileSync(this.clusterFile, 'utf8')) as ClusterFile;
  }

  /**
   * Creates the cluster: directory, CA, master and CLI certificates, database.
   * Refuses a directory that already holds a cluster.
   */
  init(options: { name: string; masterAddress: string }): ClusterFile {
    const { host } = checkAddress(options.masterAddress, 'master address');
    checkName('node', options.name);
    if (this.exists() || fs.existsSync(this.dbFile))
      throw new Error(`${this.dir} already holds a cluster; remove it first or use another --cluster-dir`);
    const { createCa, issueCertificate } = pki();
    const { CLI_ROLE, MASTER_ROLE } = roles();
    const { openDb, nowIso } = db();
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(this.dir, 0o700);
    fs.mkdirSync(this.pkiDir, { recursive: true, mode: 0o700 });
    createCa(this.pkiDir, `gnt-hotplug CA ${options.name}`);
    issueCertificate(this.ca, this.pkiDir, 'master', MASTER_ROLE, masterAltNames(host));
    issueCertificate(this.ca, this.pkiDir, 'cli', CLI_ROLE, { dns: ['localhost'], ip: ['127.0.0.1'] });
    const database = openDb(this.dbFile, { create: true });
    const store = new (configStore().ConfigStore)(database);
    const file: ClusterFile = { name: options.name, master_address: options.masterAddress, created_at: nowIso() };
    store.setClusterValue('name', file.name);
    store.setClusterValue('master_address', file.master_address);
    store.setClusterValue('created_at', file.created_at);
    database.close();
    const tmp = `${this.clusterFile}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify(file, null, 2) + '\n', { mode: 0o600 });
    fs.renameSync(tmp, this.clusterFile);
    return file;
  }

  /**
   * Reissues the master's and the CLI's certificates from the CA in place,
   * without the master (gnt-cluster renew-crypto --local): for a cluster
   * whose certificates predate roles. The master must be restarted to use
   * them; node certificates are reissued with issueNodeCert.
   */
  reissueLocal(): { master: string; cli: string } {
    if (!fs.existsSync(this.ca.key)) throw new Error(`no cluster CA in ${this.pkiDir}: run "gnt-cluster init" first`);
    const { host } = checkAddress(this.readClusterFile().master_address, 'master address');
    const alt = masterAltNames(host);
    const { issueCertificate, writeFileDurably } = pki();
    const { CLI_ROLE, MASTER_ROLE } = roles();
    const staging = fs.mkdtempSync(path.join(this.pkiDir, 'local-'));
    try {
      const m = issueCertificate(this.ca, staging, 'master', MASTER_ROLE, alt);
      const c = issueCertificate(this.ca, staging, 'cli', CLI_ROLE, { dns: ['localhost'], ip: ['127.0.0.1'] });
      writeFileDurably(this.masterIdentity.key, fs.readFileSync(m.key), 0o600);
      writeFileDurably(this.masterIdentity.cert, fs.readFileSync(m.cert), 0o644);
      writeFileDurably(this.cliIdentity.key, fs.readFileSync(c.key), 0o600);
      writeFileDurably(this.cliIdentity.cert, fs.readFileSync(c.cert), 0o644);
    } finally {
      fs.rmSync(staging, { recursive: true, force: true });
    }
    return { master: this.masterIdentity.cert, cli: this.cliIdentity.cert };
  }

  /**
   * Issues a node daemon's certificate into `outDir` (0700): node.pem,
   * node.key (0600) and a copy of ca.pem. The node is started with them by
   * the operator; nothing is copied to other hosts.
   */
  issueNodeCert(name: string, outDir: string, alt: { dns?: string[]; ip?: string[] }): { ca: string; cert: string; key: string } {
    checkName('node', name);
    if (!fs.existsSync(this.ca.key)) throw new Error(`no cluster CA in ${this.pkiDir}: run "gnt-cluster init" first`);
    fs.mkdirSync(outDir, { recursive: true, mode: 0o700 });
    fs.chmodSync(outDir, 0o700);
    const issued = pki().issueCertificate(this.ca, outDir, name, roles().nodeRole(name), {
      dns: alt.dns?.length ? alt.dns : [name, 'localhost'],
      ip: alt.ip?.length ? alt.ip : ['127.0.0.1'],
    });
    const cert = path.join(outDir, 'node.pem');
    const key = path.join(outDir, 'node.key');
    fs.renameSync(issued.cert, cert);
    fs.renameSync(issued.key, key);
    const ca = path.join(outDir, 'ca.pem');
    fs.copyFileSync(this.ca.cert, ca);
    fs.chmodSync(ca, 0o644);
    fs.chmodSync(key, 0o600);
    return { ca, cert, key };
  }
}
