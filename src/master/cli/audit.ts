/** gnt-instance audit INSTANCE and gnt-node audit NODE: the node's audit trail (docs/audit.md). */
import type { Command } from './common';
import { positionals } from './common';
import { call, connectMaster } from './client';
import { json, table } from './output';
import { UsageError } from '../validate';
import type { MasterAuditReply__Output } from '../../generated/gnt/master/v1/MasterAuditReply';

function auditCommand(what: 'instance' | 'node'): Command {
  const NAME = what.toUpperCase();
  return {
    usage: `gnt-${what} audit [--since ISO_TIME] [--limit N] [--output json] ${NAME}`,
    spec: { values: ['since', 'limit'] },
    async run(args, { dir, output }) {
      const [name] = positionals(args, [NAME]);
      const limitText = args.value('limit') ?? '0';
      if (!/^\d{1,6}$/.test(limitText)) throw new UsageError(`--limit "${limitText.slice(0, 20)}" is not a number from 0 to 999999`);
      const since = args.value('since') ?? '';
      if (since && Number.isNaN(Date.parse(since))) throw new UsageError(`--since "${since.slice(0, 40)}" is not an ISO 8601 time (e.g. 2026-12-01T10:00:00Z)`);
      const { client, address } = connectMaster(dir);
      try {
        const req = { [what]: name, since, limit: Number(limitText) };
        const reply = await call<object, MasterAuditReply__Output>(client, address, 'AuditLog', req);
        if (output === 'json') process.stdout.write(json(reply));
        else {
          process.stdout.write(
            table(
              ['Time', 'Instance', 'Action', 'Device', 'Operation', 'Outcome', 'Requested by', 'Caller'],
              reply.records.map((r) => [r.time, r.instance, r.action, r.deviceKind ? `${r.deviceKind} ${r.deviceUuid}`.trim() : '', r.operationId,
                r.outcome + (r.message ? `: ${r.message}` : ''), r.requestedBy, r.caller]),
            ),
          );
          if (reply.skipped) process.stderr.write(`warning: ${reply.skipped} unreadable line(s) in node ${reply.node}'s audit.log were skipped\n`);
        }
        return 0;
      } finally {
        client.close();
      }
    },
  };
}

export const instanceAudit = auditCommand('instance');
export const nodeAudit = auditCommand('node');
