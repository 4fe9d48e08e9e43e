/** gnt-node: add, remove, list, info. */
import type { CommandGroup } from './common';
import { positionals } from './common';
import { call, connectMaster, runJob } from './client';
import { block, json, table } from './output';
import { checkAddress, checkName, formatSize, UsageError } from '../validate';
import type { ListNodesReply__Output } from '../../generated/gnt/master/v1/ListNodesReply';
import type { NodeDetails__Output } from '../../generated/gnt/master/v1/NodeDetails';
import { nodeAudit } from './audit';

export const nodeCommands: CommandGroup = {
  audit: nodeAudit,
  add: {
    usage: 'gnt-node add NODE --address HOST:PORT [--submit]',
    spec: { values: ['address'], flags: ['submit'] },
    async run(args, { dir }) {
      const [name] = positionals(args, ['NODE']);
      checkName('node', name);
      const address = args.value('address');
      if (!address) throw new UsageError('--address HOST:PORT (of the node\'s gnt-noded) is required');
      checkAddress(address, 'node address');
      return runJob(dir, { nodeAdd: { name, address } }, args.flags.has('submit'));
    },
  },
  remove: {
    usage: 'gnt-node remove NODE [--submit]',
    spec: { flags: ['submit'] },
    async run(args, { dir }) {
      const [name] = positionals(args, ['NODE']);
      checkName('node', name);
      return runJob(dir, { nodeRemove: { name } }, args.flags.has('submit'));
    },
  },
  list: {
    usage: 'gnt-node list [--output json]',
    spec: {},
    async run(args, { dir, output }) {
      positionals(args, []);
      const { client, address } = connectMaster(dir);
      try {
        const reply = await call<object, ListNodesReply__Output>(client, address, 'ListNodes', {});
        if (output === 'json') process.stdout.write(json(reply.nodes));
        else process.stdout.write(table(['Node', 'Address', 'Instances', 'UUID'], reply.nodes.map((n) => [n.name, n.address, n.instanceCount, n.uuid])));
        return 0;
      } finally {
        client.close();
      }
    },
  },
  info: {
    usage: 'gnt-node info NODE [--output json]',
    spec: {},
    async run(args, { dir, output }) {
      const [name] = positionals(args, ['NODE']);
      checkName('node', name);
      const { client, address } = connectMaster(dir);
      try {
        const d = await call<object, NodeDetails__Output>(client, address, 'GetNode', { name });
        if (output === 'json') {
          process.stdout.write(json(d));
          return 0;
        }
        const n = d.node!;
        const l = d.live!;
        process.stdout.write(
          block([
            ['Node', n.name],
            ['UUID', n.uuid],
            ['Address', n.address],
            ['Instances', n.instanceCount],
            ['Added', n.createdAt],
            [
              'Live (NodeInfo)',
              l.reachable
                ? {
                    Name: l.name,
                    CPUs: l.cpus,
                    Memory: `${l.memoryFreeMib} MiB free of ${l.memoryTotalMib} MiB`,
                    QEMU: l.qemuVersion,
                    Storage: `${l.storageDir}, ${formatSize(Number(l.storageFreeBytes))} free`,
                  }
                : { Reachable: 'no', Error: l.error },
            ],
          ]),
        );
        return 0;
      } finally {
        client.close();
      }
    },
  },
};
