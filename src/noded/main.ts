/**
 * gnt-noded: the node daemon.
 *
 *   node dist/src/noded/main.js --name NAME --listen HOST:PORT --data-dir DIR
 *     --storage-dir DIR --ca FILE --cert FILE --key FILE [--qemu BINARY]
 *     [--migration-address HOST]
 *
 * --migration-address: the address incoming live migrations listen on (one
 * concrete address of this node; default: the host of --listen).
 *
 * Logs one line per RPC to stderr. On SIGTERM or SIGINT it stops serving and
 * exits; QEMU processes keep running and are picked up again at the next start.
 */
import { readIdentity } from '../common/pki';
import { startNodeServer } from './server';

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
}

const USAGE =
  'usage: gnt-noded --name NAME --listen HOST:PORT --data-dir DIR --storage-dir DIR --ca FILE --cert FILE --key FILE [--qemu BINARY] [--migration-address HOST]';

function parseArgs(argv: string[]): Args {
  const flags = new Map<string, string>();
  const known = ['--name', '--listen', '--data-dir', '--storage-dir', '--ca', '--cert', '--key', '--qemu', '--migration-address'];
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (!known.includes(flag)) throw new Error(`unknown argument "${flag}"\n${USAGE}`);
    const value = argv[++i];
    if (value === undefined || value.startsWith('--')) throw new Error(`${flag} needs a value\n${USAGE}`);
    flags.set(flag, value);
  }
  const need = (flag: string): string => {
    const v = flags.get(flag);
    if (!v) throw new Error(`${flag} is required\n${USAGE}`);
    return v;
  };
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
  };
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
    qemuBinary: args.qemu,
    ...(args.migrationAddress ? { migrationHost: args.migrationAddress } : {}),
    log,
  });
  const host = args.listen.slice(0, args.listen.lastIndexOf(':'));
  process.stdout.write(`gnt-noded ${args.name} listening on ${host}:${node.port}\n`);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: shutting down (QEMU processes keep running)`);
    void node.shutdown().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`gnt-noded: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
