/**
 * gnt-cluster: init, issue-node-cert, info work on the cluster directory
 * itself; verify (verify.ts) and renew-crypto go through the master.
 */
import * as fs from 'node:fs';
import type { CommandGroup } from './common';
import { positionals } from './common';
import { block, json } from './output';
import { checkName, UsageError } from '../validate';
import { clusterVerifyCommand } from './verify';
import { runJob } from './client';

export const clusterCommands: CommandGroup = {
  init: {
    usage: 'gnt-cluster init --master-address HOST:PORT [--name NAME] [--cluster-dir DIR]',
    spec: { values: ['master-address', 'name'] },
    async run(args, { dir }) {
      positionals(args, []);
      const masterAddress = args.value('master-address');
      if (!masterAddress) throw new UsageError('--master-address HOST:PORT is required');
      const name = args.value('name') ?? 'cluster';
      checkName('node', name);
      const file = dir.init({ name, masterAddress });
      process.stdout.write(
        `cluster "${file.name}" initialised in ${dir.dir}\n` +
          `  CA:      ${dir.ca.cert}\n` +
          `  master:  ${dir.masterIdentity.cert}\n` +
          `  CLI:     ${dir.cliIdentity.cert}\n` +
          `  config:  ${dir.dbFile}\n` +
          `start the master with: gnt-masterd --cluster-dir ${dir.dir}   (listens on ${file.master_address})\n` +
          `issue node certificates with: gnt-cluster issue-node-cert NODE --out DIR --cluster-dir ${dir.dir}\n`,
      );
      return 0;
    },
  },
  'issue-node-cert': {
    usage: 'gnt-cluster issue-node-cert NODE --out DIR [--ip IP]... [--dns NAME]... [--cluster-dir DIR]',
    spec: { values: ['out'], multi: ['ip', 'dns'] },
    async run(args, { dir }) {
      const [name] = positionals(args, ['NODE']);
      checkName('node', name);
      const out = args.value('out');
      if (!out) throw new UsageError('--out DIR is required');
      for (const ip of args.all('ip')) if (!/^[0-9.]+$|^[0-9a-fA-F:]+$/.test(ip)) throw new UsageError(`--ip "${ip}" is not an IP address`);
      dir.readClusterFile();
      const files = dir.issueNodeCert(name, out, { ip: args.all('ip'), dns: args.all('dns') });
      process.stdout.write(
        `certificate for node ${name} written to ${out}: ${files.cert}, ${files.key} (0600), ${files.ca}\n` +
          `start the node daemon with: gnt-noded --name ${name} --listen HOST:PORT --ca ${files.ca} --cert ${files.cert} --key ${files.key} ...\n`,
      );
      return 0;
    },
  },
  info: {
    usage: 'gnt-cluster info [--output json] [--cluster-dir DIR]',
    spec: {},
    async run(args, { dir, output }) {
      positionals(args, []);
      const file = dir.readClusterFile();
      const info = {
        name: file.name,
        master_address: file.master_address,
        created_at: file.created_at,
        cluster_dir: dir.dir,
        database: dir.dbFile,
        ca: dir.ca.cert,
        master_cert: dir.masterIdentity.cert,
        cli_cert: dir.cliIdentity.cert,
        database_present: fs.existsSync(dir.dbFile),
      };
      process.stdout.write(output === 'json' ? json(info) : block(Object.entries(info)));
      return 0;
    },
  },
  'renew-crypto': {
    usage: 'gnt-cluster renew-crypto [--new-ca] [--submit] | --local [--cluster-dir DIR]',
    spec: { flags: ['new-ca', 'submit', 'local'] },
    async run(args, { dir }) {
      positionals(args, []);
      if (args.flags.has('local')) {
        if (args.flags.has('new-ca') || args.flags.has('submit')) throw new UsageError('--local takes neither --new-ca nor --submit');
        const files = dir.reissueLocal();
        process.stdout.write(
          `reissued ${files.master} and ${files.cli} with their roles from the CA in ${dir.pkiDir}\n` +
            'restart gnt-masterd, then reissue each node\'s certificate with gnt-cluster issue-node-cert NODE and restart its gnt-noded\n',
        );
        return 0;
      }
      return runJob(dir, { clusterRenewCrypto: { newCa: args.flags.has('new-ca') } }, args.flags.has('submit'));
    },
  },
  modify: {
    usage: 'gnt-cluster modify --migration-tls=on|off [--submit]',
    spec: { values: ['migration-tls'], flags: ['submit'] },
    async run(args, { dir }) {
      positionals(args, []);
      const tls = args.value('migration-tls');
      if (tls === undefined) throw new UsageError('gnt-cluster modify needs a setting to change: --migration-tls=on|off');
      if (tls !== 'on' && tls !== 'off') throw new UsageError(`--migration-tls must be on or off, not "${tls.slice(0, 20)}"`);
      return runJob(dir, { clusterModify: { migrationTls: tls } }, args.flags.has('submit'));
    },
  },
  verify: clusterVerifyCommand,
};
