/**
 * Entry point of every gnt-* command. The program is chosen by the first
 * argument (as the bin/ shims pass it) or by the script's basename:
 *   main.js gnt-instance modify --net add web1
 * Exit codes: 0 ok, 1 error or failed job, 2 usage error. Errors go to
 * stderr as one line "Failure: ...".
 *
 * Only the program's own command group is loaded (and gnt-masterd's daemon
 * code only for gnt-masterd): a CLI line pays for what it runs. Before
 * anything else is loaded, a CLI command installs the V8 code cache
 * (common/compile-cache.ts); gnt-masterd does not.
 */
import * as path from 'node:path';
import type { CommandGroup } from './common';
import { installCompileCache } from '../../common/compile-cache';

const GROUPS: Record<string, () => CommandGroup> = {
  'gnt-cluster': () => (require('./cluster') as typeof import('./cluster')).clusterCommands,
  'gnt-node': () => (require('./node') as typeof import('./node')).nodeCommands,
  'gnt-instance': () => (require('./instance') as typeof import('./instance')).instanceCommands,
  'gnt-job': () => (require('./job') as typeof import('./job')).jobCommands,
};

const oneLine = (s: string): string => s.replace(/\s*\n\s*/g, '; ').trim();

function groupUsage(prog: string, group: CommandGroup): string {
  return `usage: ${prog} COMMAND [options]\ncommands:\n${Object.values(group).map((c) => `  ${c.usage}`).join('\n')}\n` +
    `common options: --cluster-dir DIR (or GNT_CLUSTER_DIR; default /var/lib/gnt-hotplug), --output json|table, --help\n`;
}

export async function main(argv: string[]): Promise<number> {
  // grpc-js sets the TLS server name to the address even when it is an IP;
  // Node's DEP0123 warning about that would break the one-line error output.
  process.noDeprecation = true;
  let prog = path.basename(process.argv[1] ?? '').replace(/\.js$/, '');
  let rest = argv;
  if (argv[0] && (Object.prototype.hasOwnProperty.call(GROUPS, argv[0]) || argv[0] === 'gnt-masterd')) {
    prog = argv[0];
    rest = argv.slice(1);
  }
  if (prog === 'gnt-masterd') return (require('../main-masterd') as typeof import('../main-masterd')).masterdMain(rest);
  installCompileCache();
  const { parseCommand } = require('./common') as typeof import('./common');
  const { CliError } = require('./client') as typeof import('./client');
  const { UsageError } = require('../validate') as typeof import('../validate');
  const load = Object.prototype.hasOwnProperty.call(GROUPS, prog) ? GROUPS[prog] : undefined;
  if (!load) {
    process.stderr.write(`Failure: unknown program "${prog}"; use one of ${[...Object.keys(GROUPS), 'gnt-masterd'].join(', ')}\n`);
    return 2;
  }
  const group = load();
  const sub = rest[0];
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
    (sub ? process.stdout : process.stderr).write(groupUsage(prog, group));
    return sub ? 0 : 2;
  }
  const cmd = Object.prototype.hasOwnProperty.call(group, sub) ? group[sub] : undefined;
  if (!cmd) {
    process.stderr.write(`Failure: unknown command "${prog} ${sub}"; commands: ${Object.keys(group).join(', ')}\n`);
    return 2;
  }
  try {
    const { args, ctx } = parseCommand(cmd, rest.slice(1));
    if (args.flags.has('help')) {
      process.stdout.write(`usage: ${cmd.usage}\n`);
      return 0;
    }
    return await cmd.run(args, ctx);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`Failure: ${oneLine(err.message)} (see ${prog} ${sub} --help)\n`);
      return 2;
    }
    if (err instanceof CliError) {
      process.stderr.write(`Failure: ${oneLine(err.message)}\n`);
      return err.exitCode;
    }
    process.stderr.write(`Failure: ${oneLine(err instanceof Error ? err.message : String(err))}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    // gRPC channels may keep the event loop alive a little; the answer is complete.
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`Failure: ${oneLine(String(err))}\n`);
      process.exit(1);
    },
  );
}
