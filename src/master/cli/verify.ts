/** gnt-cluster verify [--fix] and gnt-instance verify [--fix] INSTANCE (see src/master/verify.ts). */
import type { Command } from './common';
import { positionals } from './common';
import { call, connectMaster } from './client';
import { json } from './output';
import { checkName } from '../validate';
import type { Line } from '../verify';
import type { ClusterDir } from '../cluster-dir';
import type { VerifyReport__Output } from '../../generated/gnt/master/v1/VerifyReport';
import type { VerifyRequest } from '../../generated/gnt/master/v1/VerifyRequest';

/** A verification with --fix waits for unplugs; give it time. */
const VERIFY_TIMEOUT_MS = 30 * 60_000;

async function runVerify(dir: ClusterDir, req: VerifyRequest, output: string): Promise<number> {
  const { client, address } = connectMaster(dir);
  try {
    const r = await call<VerifyRequest, VerifyReport__Output>(client, address, 'Verify', req, VERIFY_TIMEOUT_MS);
    if (output === 'json') process.stdout.write(json(r));
    else {
      // The master's verifier (config store, node RPC) is loaded only for its formatter, and only here.
      const { formatLine } = require('../verify') as typeof import('../verify');
      for (const l of r.lines) process.stdout.write(`${formatLine(l as Line)}\n`);
      const notes = r.lines.filter((l) => l.severity === 'NOTE').length;
      const repaired = r.differences - r.unrepaired;
      process.stdout.write(`verify: ${r.differences} difference(s)${req.fix ? `, ${repaired} repaired, ${r.unrepaired} left` : ''}, ${notes} note(s) (job ${r.jobId})\n`);
    }
    return r.unrepaired > 0 ? 1 : 0;
  } finally {
    client.close();
  }
}

export const clusterVerifyCommand: Command = {
  usage: 'gnt-cluster verify [--fix] [--output json]',
  spec: { flags: ['fix'] },
  async run(args, { dir, output }) {
    positionals(args, []);
    return runVerify(dir, { instance: '', fix: args.flags.has('fix') }, output);
  },
};

export const instanceVerifyCommand: Command = {
  usage: 'gnt-instance verify [--fix] [--output json] INSTANCE',
  spec: { flags: ['fix'] },
  async run(args, { dir, output }) {
    const name = checkName('instance', positionals(args, ['INSTANCE'])[0]);
    return runVerify(dir, { instance: name, fix: args.flags.has('fix') }, output);
  },
};
