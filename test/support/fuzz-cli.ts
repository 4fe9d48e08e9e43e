/**
 * Random command lines for gnt-instance, gnt-node, gnt-cluster and gnt-job:
 * the commands and their options are read from the CLI's own usage texts,
 * values come from the same hostile pools as the gRPC fuzzing. Each run must
 * end within its bound with exit code 0, 1 or 2, a "Failure: ..." line when
 * it fails, and no stack trace.
 */
import { spawn } from 'node:child_process';
import fc from 'fast-check';
import { clusterCommands } from '../../src/master/cli/cluster';
import type { CommandGroup } from '../../src/master/cli/common';
import { instanceCommands } from '../../src/master/cli/instance';
import { jobCommands } from '../../src/master/cli/job';
import { nodeCommands } from '../../src/master/cli/node';
import { CLI_MAIN } from './cli-cluster';

export const CLI_GROUPS: Record<string, CommandGroup> = {
  'gnt-instance': instanceCommands,
  'gnt-node': nodeCommands,
  'gnt-cluster': clusterCommands,
  'gnt-job': jobCommands,
};

/** Commands whose instance argument never names one of the run's own instances (they would stop or remove it). */
const DESTRUCTIVE = new Set(['gnt-instance remove', 'gnt-instance stop', 'gnt-instance migrate', 'gnt-instance failover']);
/** The test appends its own --cluster-dir; a generated one would point the CLI at some other directory. */
const NEVER = new Set(['--cluster-dir']);

export interface CliContext {
  /** Values that mean something: instance and node names, job ids, paths, device specs. */
  values: readonly string[];
  /** Hostile strings (no NUL: argv cannot carry it). */
  hostile: readonly string[];
  protectedNames: readonly string[];
}

/** The options a usage text names, e.g. ["-n", "--vcpus", "--net", "-H", ...]. */
export function usageOptions(usage: string): string[] {
  return [...new Set(usage.match(/(?<![\w-])--?[A-Za-z][\w-]*/g) ?? [])].filter((o) => !NEVER.has(o));
}

export function argvArbitrary(ctx: CliContext): fc.Arbitrary<string[]> {
  const commands = Object.entries(CLI_GROUPS).flatMap(([prog, g]) => Object.entries(g).map(([sub, c]) => ({ prog, sub, usage: c.usage })));
  return fc.constantFrom(...commands).chain(({ prog, sub, usage }) => {
    const guard = DESTRUCTIVE.has(`${prog} ${sub}`);
    const values = ctx.values.filter((v) => !guard || !ctx.protectedNames.includes(v));
    const options = [...usageOptions(usage), '--help', '--output', '--', '-', '--no-such-option'];
    const token = fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom(...options) },
      { weight: 4, arbitrary: fc.constantFrom(...values) },
      { weight: 3, arbitrary: fc.constantFrom(...ctx.hostile) },
      { weight: 1, arbitrary: fc.string({ maxLength: 30 }).filter((s) => !s.includes('\0')) },
      { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...options), fc.constantFrom(...values, ...ctx.hostile)).map(([o, v]) => `${o}=${v}`) },
    );
    const args = fc.array(token, { maxLength: 8 }).map((a) => (guard ? a.filter((x) => !ctx.protectedNames.includes(x)) : a));
    return fc.tuple(fc.constant([prog, sub]), args).map(([head, rest]) => [...head, ...rest]);
  });
}

export interface CliOutcome {
  argv: string[];
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export function runCliBounded(clusterDir: string, argv: string[], boundMs: number): Promise<CliOutcome> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI_MAIN, ...argv, '--cluster-dir', clusterDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, boundMs);
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve({ argv, code: -1, signal: null, stdout, stderr: `spawn failed: ${err.message}`, timedOut });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ argv, code, signal, stdout, stderr, timedOut });
    });
  });
}

/** What is wrong with a CLI run ('' when nothing). */
export function cliProblem(o: CliOutcome): string {
  const p: string[] = [];
  if (o.timedOut) p.push('did not exit within its bound');
  else if (o.signal) p.push(`killed by ${o.signal}`);
  else if (o.code === null || ![0, 1, 2].includes(o.code)) p.push(`exit code ${o.code}`);
  if (/^\s+at .+(\(|:\d+)/m.test(o.stderr)) p.push('stack trace on stderr');
  if (o.code !== 0 && !o.timedOut && !/^(Failure: |usage: )/m.test(o.stderr)) p.push('no "Failure: ..." line on stderr');
  if (o.stderr.length > 16_384) p.push(`${o.stderr.length} characters on stderr`);
  return p.join('; ');
}

export function describeArgv(argv: string[]): string {
  return JSON.stringify(argv.map((a) => (a.length > 60 ? `${a.slice(0, 40)}…(${a.length} chars)` : a)));
}
