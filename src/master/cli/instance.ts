/** gnt-instance: add, start, stop, remove, modify, grow-disk, migrate, failover, list, info. */
import type { ParsedArgs } from './args';
import type { CommandGroup } from './common';
import { positionals } from './common';
import { call, connectMaster, runJob } from './client';
import { block, json, table } from './output';
import { formatDeviceTree } from './device-tree';
import { instanceVerifyCommand } from './verify';
import { parseBackendParams, parseDiskChange, parseDiskSpec, parseHvparams, parseNicChange, parseNicSpec } from './parse';
import { checkCount, checkName, checkNodePath, formatSize, parseSize, parseSizeMiB, UsageError } from '../validate';
import type { InstanceGrowDiskOp } from '../../generated/gnt/master/v1/InstanceGrowDiskOp';
import { describeIoLimits } from '../../common/io-limits';
import { ioLimitsOfApi } from './io-limits';
import type { ListInstancesReply__Output } from '../../generated/gnt/master/v1/ListInstancesReply';
import type { ListInstancesRequest } from '../../generated/gnt/master/v1/ListInstancesRequest';
import type { InstanceDetails__Output } from '../../generated/gnt/master/v1/InstanceDetails';
import type { InstanceModifyOp } from '../../generated/gnt/master/v1/InstanceModifyOp';
import type { InstanceMigrateOp } from '../../generated/gnt/master/v1/InstanceMigrateOp';
import { describeBacking } from '../jobs/disk-backing';
import { formatGuestAgent } from './guest-agent-view';
import { instanceAudit } from './audit';

const nameArg = (args: ParsedArgs): string => checkName('instance', positionals(args, ['INSTANCE'])[0]);

/** -n TARGET, checked when given; '' lets the master pick the only other node. */
const targetArg = (args: ParsedArgs): string => {
  const target = args.value('node');
  return target === undefined ? '' : checkName('node', target);
};

/** gnt-instance migrate [-n TARGET] [--cleanup] INSTANCE as the typed op (exported for tests). */
export function parseMigrateArgs(args: ParsedArgs): InstanceMigrateOp {
  const name = nameArg(args);
  const cleanup = args.flags.has('cleanup');
  if (cleanup && args.value('node') !== undefined)
    throw new UsageError('--cleanup takes no -n: it asks every node where the instance runs');
  return { name, target: cleanup ? '' : targetArg(args), cleanup, failover: false };
}

/** gnt-instance failover [-n TARGET] INSTANCE as the typed op (exported for tests). */
export function parseFailoverArgs(args: ParsedArgs): InstanceMigrateOp {
  return { name: nameArg(args), target: targetArg(args), cleanup: false, failover: true };
}

/** gnt-instance grow-disk [--absolute] INSTANCE N AMOUNT as the typed op (exported for tests). */
export function parseGrowDiskArgs(args: ParsedArgs): InstanceGrowDiskOp {
  const [name, index, amount] = positionals(args, ['INSTANCE', 'N', 'AMOUNT']);
  checkName('instance', name);
  if (!/^\d{1,4}$/.test(index)) throw new UsageError(`disk index "${index}" is not a number (0, 1, ...)`);
  return { name, index: Number(index), amountBytes: parseSize(amount, 'grow amount'), absolute: args.flags.has('absolute') };
}

export const instanceCommands: CommandGroup = {
  audit: instanceAudit,
  verify: instanceVerifyCommand,
  add: {
    usage:
      'gnt-instance add -n NODE --vcpus N [--maxvcpus N] --memory SIZE [--maxmem SIZE] --kernel PATH [--initrd PATH]\n' +
      '    [--kernel-args STR] [--disk size=SIZE|adopt=DEV[,iops_max=N,bps_max=N,...]]... [--net [mac=MAC][,link=BR]]... [-H key=value,...] [--no-start] [--submit] INSTANCE',
    spec: {
      values: ['node', 'vcpus', 'maxvcpus', 'memory', 'maxmem', 'kernel', 'initrd', 'kernel-args'],
      multi: ['disk', 'net', 'hvparams'],
      flags: ['no-start', 'submit'],
      aliases: { n: 'node', H: 'hvparams' },
    },
    async run(args, { dir }) {
      const name = nameArg(args);
      const node = args.value('node');
      if (!node) throw new UsageError('-n NODE is required');
      checkName('node', node);
      const vcpusText = args.value('vcpus');
      if (!vcpusText) throw new UsageError('--vcpus N is required');
      const vcpus = checkCount(vcpusText, 'vcpus');
      const maxvcpus = args.value('maxvcpus') ? checkCount(args.value('maxvcpus')!, 'maxvcpus') : vcpus;
      if (maxvcpus < vcpus) throw new UsageError(`--maxvcpus ${maxvcpus} is less than --vcpus ${vcpus}`);
      const memText = args.value('memory');
      if (!memText) throw new UsageError('--memory SIZE is required (e.g. 512M)');
      const memoryMib = parseSizeMiB(memText, 'memory');
      const maxmemMib = args.value('maxmem') ? parseSizeMiB(args.value('maxmem')!, 'maxmem') : memoryMib;
      if (maxmemMib < memoryMib) throw new UsageError(`--maxmem is less than --memory`);
      const kernel = args.value('kernel');
      if (!kernel) throw new UsageError('--kernel PATH is required (a path on the node)');
      checkNodePath(kernel, 'kernel');
      const initrd = args.value('initrd') ?? '';
      if (initrd) checkNodePath(initrd, 'initrd');
      return runJob(
        dir,
        {
          instanceAdd: {
            name, node, vcpus, maxvcpus, memoryMib, maxmemMib, kernel, initrd,
            kernelArgs: args.value('kernel-args') ?? '',
            disks: args.all('disk').map((d, i) => parseDiskSpec(d, i)),
            nics: args.all('net').map((n, i) => parseNicSpec(n, i)),
            hvparams: parseHvparams(args.all('hvparams')),
            noStart: args.flags.has('no-start'),
          },
        },
        args.flags.has('submit'),
      );
    },
  },
  start: {
    usage: 'gnt-instance start [--submit] INSTANCE',
    spec: { flags: ['submit'] },
    async run(args, { dir }) {
      return runJob(dir, { instanceStart: { name: nameArg(args) } }, args.flags.has('submit'));
    },
  },
  stop: {
    usage: 'gnt-instance stop [--timeout SECONDS] [--submit] INSTANCE',
    spec: { values: ['timeout'], flags: ['submit'] },
    async run(args, { dir }) {
      const name = nameArg(args);
      const timeoutMs = args.value('timeout') ? checkCount(args.value('timeout')!, 'timeout', 1, 3600) * 1000 : 0;
      return runJob(dir, { instanceStop: { name, timeoutMs } }, args.flags.has('submit'));
    },
  },
  remove: {
    usage: 'gnt-instance remove [--submit] INSTANCE',
    spec: { flags: ['submit'] },
    async run(args, { dir }) {
      return runJob(dir, { instanceRemove: { name: nameArg(args) } }, args.flags.has('submit'));
    },
  },
  modify: {
    usage:
      'gnt-instance modify [--hotplug | --hotplug-if-possible] [--net add[:mac=MAC,link=BR] | --net N:mac=MAC[,link=BR] | --net N:remove]...\n' +
      '    [--disk add:size=SIZE|add:adopt=DEV|POOL/IMAGE[,template=rbd][,iops_max=N,...] | --disk N:remove\n' +
      '     | --disk N:iops_max=N,iops_rd_max=N,iops_wr_max=N,bps_max=N,bps_rd_max=N,bps_wr_max=N]... [-B vcpus=N,memory=SIZE]\n' +
      '    [--wait-guest | --no-wait-guest] [--wait-guest-timeout SECONDS] [--submit] INSTANCE',
    spec: { multi: ['net', 'disk', 'backend-parameters'], values: ['wait-guest-timeout'], flags: ['hotplug', 'hotplug-if-possible', 'submit', 'wait-guest', 'no-wait-guest'], aliases: { B: 'backend-parameters' } },
    async run(args, { dir }) {
      const name = nameArg(args);
      if (args.flags.has('hotplug') && args.flags.has('hotplug-if-possible'))
        throw new UsageError('--hotplug and --hotplug-if-possible exclude each other');
      if (args.flags.has('wait-guest') && args.flags.has('no-wait-guest')) throw new UsageError('--wait-guest and --no-wait-guest exclude each other');
      const waitTimeout = args.value('wait-guest-timeout');
      if (waitTimeout !== undefined && !/^[1-9]\d{0,2}$/.test(waitTimeout)) throw new UsageError(`--wait-guest-timeout ${waitTimeout.slice(0, 20)} is not a number of seconds from 1 to 600`);
      const be = parseBackendParams(args.all('backend-parameters'));
      const op: InstanceModifyOp = {
        name,
        vcpus: be.vcpus,
        memoryMib: be.memoryMib,
        nics: args.all('net').map(parseNicChange),
        disks: args.all('disk').map(parseDiskChange),
        hotplug: args.flags.has('hotplug') ? 'HOTPLUG' : args.flags.has('hotplug-if-possible') ? 'HOTPLUG_IF_POSSIBLE' : 'HOTPLUG_MODE_UNSPECIFIED',
        waitGuest: args.flags.has('wait-guest') ? 'WAIT_GUEST' : args.flags.has('no-wait-guest') ? 'NO_WAIT_GUEST' : 'WAIT_GUEST_MODE_UNSPECIFIED',
        waitGuestTimeoutS: waitTimeout ? Number(waitTimeout) : 0,
      };
      if (!op.nics!.length && !op.disks!.length && !be.vcpus && !be.memoryMib) throw new UsageError('nothing to change: give --net, --disk or -B');
      return runJob(dir, { instanceModify: op }, args.flags.has('submit'));
    },
  },
  'grow-disk': {
    usage: 'gnt-instance grow-disk [--absolute] [--submit] INSTANCE N AMOUNT   (AMOUNT: e.g. 512M, 1G; --absolute: the new total size)',
    spec: { flags: ['absolute', 'submit'] },
    async run(args, { dir }) {
      return runJob(dir, { instanceGrowDisk: parseGrowDiskArgs(args) }, args.flags.has('submit'));
    },
  },
  migrate: {
    usage: 'gnt-instance migrate [-n TARGET] [--cleanup] [--submit] INSTANCE',
    spec: { values: ['node'], flags: ['cleanup', 'submit'], aliases: { n: 'node' } },
    async run(args, { dir }) {
      return runJob(dir, { instanceMigrate: parseMigrateArgs(args) }, args.flags.has('submit'));
    },
  },
  failover: {
    usage: 'gnt-instance failover [-n TARGET] [--submit] INSTANCE',
    spec: { values: ['node'], flags: ['submit'], aliases: { n: 'node' } },
    async run(args, { dir }) {
      return runJob(dir, { instanceMigrate: parseFailoverArgs(args) }, args.flags.has('submit'));
    },
  },
  list: {
    usage: 'gnt-instance list [--no-live] [--output json]',
    spec: { flags: ['no-live'] },
    async run(args, { dir, output }) {
      positionals(args, []);
      const { client, address } = connectMaster(dir);
      try {
        // the table needs only the summary (no devices, no other fields); --output json keeps the full configuration
        const summary = output !== 'json';
        const reply = await call<ListInstancesRequest, ListInstancesReply__Output>(client, address, 'ListInstances', { live: !args.flags.has('no-live'), summary });
        if (!summary) process.stdout.write(json(reply.instances));
        else
          process.stdout.write(
            table(
              ['Instance', 'Node', 'Admin', 'Status', 'VCPUs', 'Memory', 'NICs', 'Disks'],
              reply.instances.map(({ instance: i, operState, nicCount, diskCount, nicsRemovalPending, disksRemovalPending }) => [
                i!.name, i!.node, i!.adminState, operState, `${i!.vcpus}/${i!.maxvcpus}`, `${i!.memoryMib}M/${i!.maxmemMib}M`,
                countText(nicCount, nicsRemovalPending), countText(diskCount, disksRemovalPending),
              ]),
            ),
          );
        return 0;
      } finally {
        client.close();
      }
    },
  },
  info: {
    usage: 'gnt-instance info [--output json] INSTANCE',
    spec: {},
    async run(args, { dir, output }) {
      const name = nameArg(args);
      const { client, address } = connectMaster(dir);
      try {
        const d = await call<object, InstanceDetails__Output>(client, address, 'GetInstance', { name });
        if (output === 'json') {
          process.stdout.write(json(d));
          return 0;
        }
        process.stdout.write(formatInstanceInfo(d));
        return 0;
      } finally {
        client.close();
      }
    },
  },
};

/** "2", or "2 (1 removal pending)". */
export function deviceCount(devices: { removalPending: boolean }[]): string {
  return countText(devices.length, devices.filter((x) => x.removalPending).length);
}

/** "3", or "3 (1 removal pending)". */
export function countText(total: number, pending: number): string {
  return pending ? `${total} (${pending} removal pending)` : String(total);
}

/** A device's state as config and node see it: "removal pending", "attaching" or "-". */
const deviceState = (cfgPending: boolean, nodeState: string | undefined): string =>
  cfgPending || nodeState === 'detaching' ? 'removal pending' : nodeState || '-';

export function formatInstanceInfo(d: InstanceDetails__Output): string {
  const i = d.instance!;
  const rt = d.runtime!;
  const rtNic = new Map(rt.nics.map((n) => [n.uuid, n]));
  const rtDisk = new Map(rt.disks.map((x) => [x.uuid, x]));
  const cfgUuids = new Set([...i.nics.map((n) => n.uuid), ...i.disks.map((x) => x.uuid)]);
  const r = rt.known ? rt.resources : null;
  let out = block([
    ['Instance', i.name],
    ['UUID', i.uuid],
    ['Node', i.node],
    ['Admin state', i.adminState],
    ['Runtime', rt.known ? (rt.running ? `running, pid ${rt.pid}` : 'stopped') : `unknown (${rt.error})`],
    ['VCPUs', `${i.vcpus} (max ${i.maxvcpus})`],
    ['Memory', `${i.memoryMib} MiB (max ${i.maxmemMib} MiB)`],
    ...(r
      ? ([
          ['VCPUs on the node', `boot ${r.bootVcpus} / current ${r.vcpus} / max ${r.maxVcpus}`],
          [
            'Memory on the node',
            `boot ${r.bootMemoryMib} / current ${r.memoryMib} / max ${r.maxMemoryMib} MiB (hotplug ${r.memoryHotplug || 'none'})` +
              (Number(r.pendingMemoryMib) >= 0 ? `, ${r.pendingMemoryMib} MiB at the next start` : ''),
          ],
        ] as [string, string][])
      : []),
    ['Kernel', i.kernel],
    ['Initrd', i.initrd],
    ['Kernel args', i.kernelArgs],
    ['Hypervisor parameters', Object.keys(i.hvparams).length ? Object.entries(i.hvparams).map(([k, v]) => `${k}=${v}`).join(', ') : "defaults (QEMU runs unprivileged: the node's QEMU user or uid pool)"],
  ]);
  out += 'NICs (config | node runtime):\n';
  out += i.nics.length
    ? table(
        ['  #', 'MAC', 'Link', 'Carrier', 'Rate', 'Queues', 'Model', 'UUID', 'PCI', 'Device id', 'Tap', 'State'],
        i.nics.map((n) => {
          const r = rtNic.get(n.uuid);
          return [
            `  ${n.index}`, n.mac, n.link || '-', n.linkState || 'up', n.rateMbit ? `${n.rateMbit} Mbit/s` : '-', n.queues || 1, n.model || 'virtio',
            n.uuid, r && r.pci >= 0 ? r.pci : '-', r?.deviceId || '-', r?.tap || '-', deviceState(n.removalPending, r?.state),
          ];
        }),
      )
    : '  none\n';
  out += 'Disks (config | node runtime):\n';
  out += i.disks.length
    ? table(
        ['  #', 'Size', 'Kind', 'Template', 'I/O limits', 'UUID', 'PCI', 'Device id', 'Path', 'State'],
        i.disks.map((x) => {
          const r = rtDisk.get(x.uuid);
          const kind = x.diskType === 'pmem' ? 'pmem' : x.diskBus === 'scsi' ? `scsi ${r?.scsiAddress || '-'}` : 'virtio';
          const size = Number(x.sizeBytes) || Number(r?.sizeBytes ?? 0);
          const limits = describeIoLimits(ioLimitsOfApi(x.ioLimits));
          return [
            `  ${x.index}`, size ? formatSize(size) : '-', kind, describeBacking(x.template === 'file' ? '' : x.template, x.adopt), limits === 'none' ? '-' : limits, x.uuid, r && r.pci >= 0 ? r.pci : '-', r?.deviceId || '-', r?.path || '-',
            deviceState(x.removalPending, r?.state),
          ];
        }),
      )
    : '  none\n';
  out += formatDeviceTree(rt.nics, rt.disks);
  const extra = [...rt.nics, ...rt.disks].filter((x) => !cfgUuids.has(x.uuid));
  if (extra.length)
    out += `Devices on the node but not in the configuration (pending removal at the next start):\n${extra.map((x) => `  ${x.uuid} PCI ${x.pci} ${x.deviceId}\n`).join('')}`;
  out += formatGuestAgent(d.guestAgent);
  if (d.operations.length)
    out += `Open operations (outcome not settled yet; the master settles them from the node, with no command):\n${d.operations
      .map((o) => `  ${o.id} job ${o.jobId} ${o.kind} ${o.action}${o.deviceUuid ? ` ${o.deviceUuid}` : ''}: ${o.state === 'sent' ? 'outcome unknown' : 'removal pending'} since ${o.createdAt}\n`)
      .join('')}`;
  if (d.history.length) out += `Recent history:\n${d.history.map((h) => `  ${h.time} ${h.message}\n`).join('')}`;
  return out;
}
