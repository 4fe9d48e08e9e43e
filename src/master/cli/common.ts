/** What every command gets, and the option sets they share. */
import { ClusterDir } from '../cluster-dir';
import { parseArgs, type ArgSpec, type ParsedArgs } from './args';
import type { OutputFormat } from './output';
import { UsageError } from '../validate';

export interface Command {
  usage: string;
  spec: ArgSpec;
  run(args: ParsedArgs, ctx: CommandContext): Promise<number>;
}

export interface CommandContext {
  dir: ClusterDir;
  output: OutputFormat;
}

export type CommandGroup = Record<string, Command>;

const COMMON: ArgSpec = { values: ['cluster-dir', 'output'], flags: ['help'], aliases: { o: 'output', h: 'help' } };

export function withCommon(spec: ArgSpec): ArgSpec {
  return {
    values: [...(spec.values ?? []), ...COMMON.values!],
    multi: spec.multi,
    flags: [...(spec.flags ?? []), ...COMMON.flags!],
    aliases: { ...COMMON.aliases, ...spec.aliases },
  };
}

export function parseCommand(cmd: Command, argv: string[]): { args: ParsedArgs; ctx: CommandContext } {
  const args = parseArgs(argv, withCommon(cmd.spec));
  const output = args.value('output') ?? 'table';
  if (output !== 'table' && output !== 'json') throw new UsageError(`--output must be "json" or "table", not "${output}"`);
  return { args, ctx: { dir: ClusterDir.resolve(args.value('cluster-dir')), output } };
}

export function positionals(args: ParsedArgs, names: string[], optional = 0): string[] {
  const min = names.length - optional;
  if (args.positional.length < min) throw new UsageError(`missing ${names[args.positional.length]}`);
  if (args.positional.length > names.length) throw new UsageError(`unexpected argument "${args.positional[names.length]}"`);
  return args.positional;
}
