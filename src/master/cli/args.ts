/** A small, strict command line parser: unknown options are usage errors. */
import { UsageError } from '../validate';

export interface ArgSpec {
  /** Options that take one value (the last one given wins). */
  values?: string[];
  /** Options that take a value and may be repeated. */
  multi?: string[];
  /** Options without a value. */
  flags?: string[];
  /** Short aliases, e.g. { n: 'node' }. */
  aliases?: Record<string, string>;
}

export class ParsedArgs {
  constructor(
    readonly positional: string[],
    private readonly values: Map<string, string[]>,
    readonly flags: Set<string>,
  ) {}

  value(name: string): string | undefined {
    const v = this.values.get(name);
    return v ? v[v.length - 1] : undefined;
  }

  all(name: string): string[] {
    return this.values.get(name) ?? [];
  }

  has(name: string): boolean {
    return this.values.has(name) || this.flags.has(name);
  }
}

export function parseArgs(argv: string[], spec: ArgSpec): ParsedArgs {
  const values = new Set(spec.values ?? []);
  const multi = new Set(spec.multi ?? []);
  const flags = new Set(spec.flags ?? []);
  const out = new Map<string, string[]>();
  const seenFlags = new Set<string>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    let name: string;
    let inline: string | undefined;
    if (a.startsWith('--') && a.length > 2) {
      const eq = a.indexOf('=');
      name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
      inline = eq >= 0 ? a.slice(eq + 1) : undefined;
    } else if (/^-[A-Za-z]$/.test(a)) {
      const alias = spec.aliases?.[a.slice(1)];
      if (!alias) throw new UsageError(`unknown option ${a}`);
      name = alias;
    } else {
      positional.push(a);
      continue;
    }
    if (flags.has(name)) {
      if (inline !== undefined) throw new UsageError(`option --${name} takes no value`);
      seenFlags.add(name);
    } else if (values.has(name) || multi.has(name)) {
      let v = inline;
      if (v === undefined) {
        if (i + 1 >= argv.length) throw new UsageError(`option --${name} needs a value`);
        v = argv[++i];
      }
      const list = out.get(name) ?? [];
      list.push(v);
      out.set(name, list);
    } else throw new UsageError(`unknown option --${name}`);
  }
  return new ParsedArgs(positional, out, seenFlags);
}
