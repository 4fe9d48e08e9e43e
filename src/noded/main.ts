/**
 * gnt-noded: the node daemon.
 *
 *   node dist/src/noded/main.js --name NAME --listen HOST:PORT --data-dir DIR
 *     --storage-dir DIR --ca FILE --cert FILE --key FILE [--qemu BINARY]
 *     [--migration-address HOST] [--cpu-overcommit-ratio R]
 *     [--unplug-timeout KIND=SECONDS,...] [--qemu-user NAME] [--uid-pool START-END]
 *     [--max-in-flight N] [--test-monitor] [--wait-guest-default] [--image-dir DIR] [--block-device PATH_OR_GLOB]...
 *     [--rbd-monitors HOST:PORT[,HOST:PORT] --rbd-pool POOL --rbd-keyring FILE [--rbd-id CLIENT]]
 *
 * --migration-address: the address incoming live migrations listen on (one
 * concrete address of this node; default: the host of --listen).
 * --cpu-overcommit-ratio: vCPUs per node CPU that the running instances may
 * have together, checked at start and at a live grow (default 16; decimals
 * allowed; see docs/operator-guide.md).
 * --unplug-timeout: how long the guest has to release a device of each kind
 * before its removal is reported as pending (nic, disk, cpu, memory; e.g.
 * nic=10,disk=60); an instance's hvparam unplug_timeout overrides it.
 * --image-dir: kernels and initrds are accepted only beneath it, by
 * resolution (default <data dir>/images). --block-device: a block device a
 * disk may be, an exact path or a glob such as /dev/loop* matched against
 * the device's resolved path; repeatable; default none. Disk files are
 * accepted only beneath --storage-dir (docs/operator-guide.md, "Host paths
 * the node accepts").
 * --qemu-user: the unprivileged user QEMU runs as by default (default gnt-qemu,
 * which scripts/setup-host.sh creates). --uid-pool: uids for
 * security_model=pool, one per instance; with a pool, pool is the default
 * model (src/noded/qemu-user.ts). hvparam security_model=none runs QEMU as root.
 * --rbd-monitors, --rbd-pool, --rbd-keyring, --rbd-id: the Ceph cluster
 * whose pool holds the node's RBD disks (disk template rbd): its monitors,
 * the pool, the client's keyring (a root-only file: the node reads the key
 * from it for QEMU) and the client id (default gnt). Without them an rbd
 * disk is refused (src/noded/rbd-pool.ts).
 * --test-monitor: test hook; every QEMU gets a second QMP socket
 * (qmp-test.sock in its runtime directory) for tests to drive.
 *
 * Logs one line per RPC to stderr. On SIGTERM or SIGINT it stops serving and
 * exits; QEMU processes keep running and are picked up again at the next start.
 */
import * as os from 'node:os';
import { readIdentity } from '../common/pki';
import { DEFAULT_CPU_OVERCOMMIT_RATIO, vcpuLimit } from '../hypervisor/resize';
import { parseUnplugTimeouts, type UnplugTimeouts } from '../hypervisor/unplug-timeouts';
import { parseQemuUser, parseUidPool, type UidRange } from './qemu-user';
import { rbdConfigFromFlags, type RbdPoolConfig } from './rbd-pool';
import { startNodeServer } from './server';
import { parseMetricsAddress, startMetricsServer, type MetricsAddress, type MetricsServer } from '../common/metrics-http';
import { enableNodeMetrics, NodeMetrics } from './metrics';
import { parseCpuOvercommitRatio } from './vcpu-policy';

interface Args {
  name: string;
  listen: string;
  dataDir: string;
  storageDir: string;
  ca: string;
  cert: string;
  key: string;
  qemu?: string;
  migrationAddress?: string;
  cpuOvercommitRatio?: number;
  unplugTimeouts?: UnplugTimeouts;
  qemuUser?: string;
  uidPool?: UidRange;
  testMonitor: boolean;
  waitGuestDefault: boolean;
  maxInFlight?: number;
  imageDir?: string;
  blockDevices: string[];
  rbd?: RbdPoolConfig;
  metricsListen?: MetricsAddress;
}

const USAGE =
  'usage: gnt-noded --name NAME --listen HOST:PORT --data-dir DIR --storage-dir DIR --ca FILE --cert FILE --key FILE [--qemu BINARY] [--migration-address HOST] [--cpu-overcommit-ratio R] [--unplug-timeout KIND=SECONDS,...] [--qemu-user NAME] [--uid-pool START-END] [--max-in-flight N] [--test-monitor] [--image-dir DIR] [--block-device PATH_OR_GLOB]... [--rbd-monitors HOST:PORT[,HOST:PORT] --rbd-pool POOL --rbd-keyring FILE [--rbd-id CLIENT]] [--metrics-listen HOST:PORT]';

function parseArgs(argv: string[]): Args {
  const flags = new Map<string, string>();
  const known = ['--name', '--listen', '--data-dir', '--storage-dir', '--ca', '--cert', '--key', '--qemu', '--migration-address', '--cpu-overcommit-ratio', '--unplug-timeout', '--qemu-user', '--uid-pool', '--max-in-flight', '--image-dir', '--block-device', '--rbd-monitors', '--rbd-pool', '--rbd-id', '--rbd-keyring', '--metrics-listen'];
  let testMonitor = false;
  let waitGuestDefault = false;
  const blockDevices: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--test-monitor') {
      testMonitor = true;
      continue;
    }
    if (flag === '--wait-guest-default') {
      waitGuestDefault = true;
      continue;
    }
    if (!known.includes(flag)) throw new Error(`unknown argument "${flag}"\n${USAGE}`);
    const value = argv[++i];
    if (value === undefined || value.startsWith('--')) throw new Error(`${flag} needs a value\n${USAGE}`);
    if (flag === '--block-device') blockDevices.push(value);
    else flags.set(flag, value);
  }
  const need = (flag: string): string => {
    const v = flags.get(flag);
    if (!v) throw new Error(`${flag} is required\n${USAGE}`);
    return v;
  };
  const ratio = flags.get('--cpu-overcommit-ratio');
  return {
    name: need('--name'),
    listen: need('--listen'),
    dataDir: need('--data-dir'),
    storageDir: need('--storage-dir'),
    ca: need('--ca'),
    cert: need('--cert'),
    key: need('--key'),
    qemu: flags.get('--qemu'),
    migrationAddress: flags.get('--migration-address'),
    cpuOvercommitRatio: ratio === undefined ? undefined : parseCpuOvercommitRatio(ratio),
    ...(flags.has('--unplug-timeout') ? { unplugTimeouts: parseUnplugTimeouts(flags.get('--unplug-timeout') as string, '--unplug-timeout') } : {}),
    ...(flags.has('--qemu-user') ? { qemuUser: parseQemuUser(flags.get('--qemu-user') as string) } : {}),
    ...(flags.has('--uid-pool') ? { uidPool: parseUidPool(flags.get('--uid-pool') as string) } : {}),
    testMonitor,
    waitGuestDefault,
    ...(flags.has('--max-in-flight') ? { maxInFlight: parseMaxInFlight(flags.get('--max-in-flight') as string) } : {}),
    imageDir: flags.get('--image-dir'),
    blockDevices,
    ...rbdOf(flags),
    ...(flags.has('--metrics-listen') ? { metricsListen: parseMetricsAddress(flags.get('--metrics-listen') as string) } : {}),
  };
}

function rbdOf(flags: Map<string, string>): { rbd?: RbdPoolConfig } {
  const rbd = rbdConfigFromFlags({ monitors: flags.get('--rbd-monitors'), pool: flags.get('--rbd-pool'), id: flags.get('--rbd-id'), keyring: flags.get('--rbd-keyring') });
  return rbd ? { rbd } : {};
}

/** --max-in-flight N: calls the master may have running at once, 1 to 10000. */
function parseMaxInFlight(text: string): number {
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || n < 1 || n > 10_000) throw new Error(`--max-in-flight "${text.slice(0, 20)}" is not a number from 1 to 10000`);
  return n;
}

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString()} gnt-noded: ${line}\n`);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  // Files we create (and QEMU, which inherits the mask: console log, pid file) are 0600, directories 0700.
  process.umask(0o077);
  const node = await startNodeServer({
    name: args.name,
    listen: args.listen,
    dataDir: args.dataDir,
    storageDir: args.storageDir,
    tls: readIdentity({ ca: args.ca, cert: args.cert, key: args.key }),
    tlsFiles: { ca: args.ca, cert: args.cert, key: args.key },
    ...(args.maxInFlight ? { maxInFlight: args.maxInFlight } : {}),
    qemuBinary: args.qemu,
    ...(args.migrationAddress ? { migrationHost: args.migrationAddress } : {}),
    ...(args.cpuOvercommitRatio ? { cpuOvercommitRatio: args.cpuOvercommitRatio } : {}),
    ...(args.unplugTimeouts ? { unplugTimeouts: args.unplugTimeouts } : {}),
    ...(args.qemuUser ? { qemuUser: args.qemuUser } : {}),
    ...(args.uidPool ? { uidPool: args.uidPool } : {}),
    testMonitor: args.testMonitor,
    ...(args.waitGuestDefault ? { waitGuestDefault: true } : {}),
    ...(args.imageDir ? { imageDir: args.imageDir } : {}),
    blockDevices: args.blockDevices,
    ...(args.rbd ? { rbd: args.rbd } : {}),
    log,
  });
  let metrics: MetricsServer | undefined;
  if (args.metricsListen) {
    const m = new NodeMetrics(() => node.registry.all().filter((i) => i.pid !== undefined).length);
    enableNodeMetrics(m);
    metrics = await startMetricsServer(m.registry, args.metricsListen).catch(async (err: unknown) => {
      await node.shutdown();
      throw err;
    });
    log(`metrics on http://${metrics.address}/metrics`);
  }
  const host = args.listen.slice(0, args.listen.lastIndexOf(':'));
  process.stdout.write(`gnt-noded ${args.name} listening on ${host}:${node.port}\n`);
  const ratio = args.cpuOvercommitRatio ?? DEFAULT_CPU_OVERCOMMIT_RATIO;
  const cpus = os.availableParallelism();
  log(`vCPU overcommit ratio ${ratio}: the running instances may have ${vcpuLimit(cpus, ratio)} vCPUs together (${cpus} CPUs)`);
  const hp = node.registry.options.hostPaths;
  if (hp)
    log(`host paths: disk files beneath ${hp.storageDir}, kernels and initrds beneath ${hp.imageDir}, block devices: ${hp.blockDevices.length ? hp.blockDevices.join(' ') : 'none'}`);
  const rbd = node.rbdPool;
  if (rbd) log(`RBD: pool ${rbd.pool} as client.${rbd.access.user}, monitors ${rbd.access.monitors.map((m) => `${m.host}:${m.port}`).join(',')}`);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: shutting down (QEMU processes keep running)`);
    void Promise.all([node.shutdown(), metrics?.close()]).then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`gnt-noded: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
