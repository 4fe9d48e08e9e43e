/**
 * The NIC parameters of issue 12 (link_state, rate, queues, model): the
 * master's --net parsing and checks, and the node's plan of a modify (what
 * is applied live, what needs a replug). The live application itself is
 * tested against the real guest (test/integration/nic-live.test.ts).
 */
import { strict as assert } from 'node:assert';
import { parseNicChange, parseNicSpec } from '../../src/master/cli/parse';
import { UsageError } from '../../src/master/validate';
import { prepareJob } from '../../src/master/jobs/ops';
import { planNicModify } from '../../src/hypervisor/nic-modify';
import { InvalidArgumentError } from '../../src/hypervisor/errors';
import type { NicRecord } from '../../src/hypervisor/runtime-file';
import { validateRuntime } from '../../src/hypervisor/runtime-validate';
import { buildFixedCommand } from '../../src/hypervisor/qemu-command';
import type { NicParams } from '../../src/master/config/config-store';
import { compareConfig, truthFrom, type ConfigView, type JobHistory, type NodeView } from '../../src/master/verify-compare';

const usage = (fn: () => unknown, re: RegExp): void => assert.throws(fn, (e: unknown) => e instanceof UsageError && re.test(e.message));

describe('NIC parameters: --net parsing (master CLI)', () => {
  it('instance add and --net add take link_state, rate, queues and model', () => {
    assert.deepEqual(parseNicSpec('link=br0,link_state=down,rate=100,queues=4,model=virtio', 0), {
      mac: '', link: 'br0', linkState: 'down', rateMbit: 100, queues: 4, model: 'virtio',
    });
    assert.deepEqual(parseNicChange('add:model=e1000,rate=0'), { action: 'ADD', index: -1, mac: '', link: '', model: 'e1000', rate: '0' });
  });
  it('a modify takes link=, link_state=, rate= (0 removes) and model=', () => {
    assert.deepEqual(parseNicChange('2:link=br2'), { action: 'MODIFY', index: 2, mac: '', link: 'br2' });
    assert.deepEqual(parseNicChange('0:link_state=down,rate=0,model=rtl8139'), { action: 'MODIFY', index: 0, mac: '', link: '', linkState: 'down', rate: '0', model: 'rtl8139' });
  });
  it('refuses bad values, unknown keys and queues on a modify, naming the problem', () => {
    usage(() => parseNicChange('0:link_state=sideways'), /link_state must be up or down, not "sideways"/);
    usage(() => parseNicChange('0:rate=fast'), /rate must be a whole number of Mbit\/s .* not "fast"/);
    usage(() => parseNicChange('0:rate=-1'), /rate must be a whole number/);
    usage(() => parseNicChange('0:rate=100001'), /from 0 \(no limit\) to 100000/);
    usage(() => parseNicChange('0:model=ne2k'), /model must be one of virtio, e1000, rtl8139, not "ne2k"/);
    usage(() => parseNicChange('0:queues=2'), /queues of an existing NIC cannot change; remove it and add a new one/);
    usage(() => parseNicChange('add:queues=0'), /queues must be a whole number from 1 to 8/);
    usage(() => parseNicChange('add:queues=9'), /queues must be a whole number from 1 to 8/);
    usage(() => parseNicChange('add:queues=2,model=e1000'), /only virtio NICs have more than one queue/);
    usage(() => parseNicChange('0:speed=10'), /unknown parameter "speed"/);
    usage(() => parseNicSpec('queues=many', 0), /queues must be a whole number/);
  });
  it('the master refuses more queues than the instance has maximum vCPUs', () => {
    const add = (queues: number) =>
      prepareJob({
        op: 'instanceAdd',
        instanceAdd: {
          name: 'web1', node: 'n1', vcpus: 1, maxvcpus: 2, memoryMib: '256', maxmemMib: '0', kernel: '/k', initrd: '', kernelArgs: '',
          disks: [], nics: [{ mac: '', link: '', linkState: '', rateMbit: 0, queues, model: '' }], hvparams: {}, noStart: true,
        },
      } as never);
    assert.doesNotThrow(() => add(2));
    assert.throws(() => add(3), /queues=3 is more than the instance's 2 maximum vCPUs/);
  });
});

describe('NIC parameters: the node plans a modify (live or replug)', () => {
  const rec: NicRecord = { uuid: 'n1', mac: '52:54:00:00:00:01', link: 'lo', pci: 5, tap: 'gnttap0' };
  it('link_state and rate are live; nothing else changes', () => {
    const p = planNicModify(rec, { link_state: 'down', rate_mbit: 10 }, 4);
    assert.equal(p.replug, false);
    assert.deepEqual(p.live, ['rate_mbit', 'link_state']);
    assert.deepEqual(p.applied, ['rate=10: live', 'link_state=down: live']);
    assert.deepEqual(p.next, { uuid: 'n1', mac: '52:54:00:00:00:01', link: 'lo', pci: 5, link_state: 'down', rate_mbit: 10 });
  });
  it('a MAC or model change replugs and carries the other changes', () => {
    const p = planNicModify({ ...rec, rate_mbit: 5 }, { model: 'e1000', rate_mbit: 0 }, 4);
    assert.equal(p.replug, true);
    assert.deepEqual(p.live, []);
    assert.deepEqual(p.applied, ['model=e1000: replug', 'rate=none: replug']);
    assert.equal(p.next.model, 'e1000');
    assert.equal(p.next.rate_mbit, undefined, 'no limit is not written');
  });
  it('the same values are no change; a multi-queue NIC cannot become an e1000', () => {
    assert.deepEqual(planNicModify(rec, { mac: rec.mac, link_state: 'up', rate_mbit: 0 }, 4).applied, []);
    assert.throws(() => planNicModify({ ...rec, queues: 2 }, { model: 'e1000' }, 4), (e: unknown) => e instanceof InvalidArgumentError && /only virtio NICs/.test(e.message));
    assert.throws(() => planNicModify(rec, { rate_mbit: 1.5 }, 4), /rate must be a whole number/);
    assert.throws(() => planNicModify(rec, { link: 'nobr0' }, 4), /bridge "nobr0" does not exist/);
  });
});

describe('NIC parameters: a carried runtime file', () => {
  const data = (nic: Record<string, unknown>): unknown => ({
    version: 2, instance: 'web1', hvparams: {}, block_devices: [],
    kvm_cmd: buildFixedCommand({ name: 'web1', memoryMiB: 256, maxMemoryMiB: 512, vcpus: 1, maxVcpus: 2, kernel: '/boot/vmlinuz', kernelArgs: 'console=ttyS0' }),
    nics: [{ uuid: 'n1', mac: '52:54:00:00:00:01', pci: 5, ...nic }],
  });
  it('refuses values the node does not write, naming the field', () => {
    const check = (d: unknown): void => validateRuntime(d as never);
    check(data({ link_state: 'down', rate_mbit: 10, queues: 2, model: 'e1000' }));
    assert.throws(() => check(data({ link_state: 'sideways' })), /nics\[0\]\.link_state="sideways" is not valid: must be up or down/);
    assert.throws(() => check(data({ rate_mbit: -1 })), /nics\[0\]\.rate_mbit="-1" is not valid/);
    assert.throws(() => check(data({ queues: 64 })), /nics\[0\]\.queues="64" is not valid: must be a whole number from 1 to 8/);
    assert.throws(() => check(data({ model: 'ne2k_pci' })), /nics\[0\]\.model="ne2k_pci" is not valid/);
  });
});

describe('NIC parameters: verify compares the configuration with the node', () => {
  const N1 = '11111111-0000-4000-8000-000000000001';
  const params = (over: Partial<NicParams> = {}): NicParams => ({ link_state: 'up', rate_mbit: 0, queues: 1, model: 'virtio', ...over });
  const cfg = (p: NicParams): ConfigView => ({
    name: 'web1', vcpus: 1, maxvcpus: 4, memoryMib: 256, maxmemMib: 1024, disks: [],
    nics: [{ uuid: N1, mac: '52:54:00:00:00:01', link: 'br0', removalPending: false, params: p }],
  });
  const node = (p: NicParams): NodeView => ({ running: true, disks: [], nics: [{ uuid: N1, mac: '52:54:00:00:00:01', link: 'br0', state: '', params: p }] });
  const history: JobHistory = { lastSync: 10, lastLive: new Map(), lastLiveResize: 0, configOnly: [] };

  it('the same parameters give nothing; a node with link down and a limit is a difference the node decides', () => {
    assert.deepEqual(compareConfig(cfg(params()), node(params()), truthFrom(history, [])), []);
    const diffs = compareConfig(cfg(params()), node(params({ link_state: 'down', rate_mbit: 10 })), truthFrom(history, []));
    assert.equal(diffs.length, 1);
    assert.match(diffs[0].problem, /52:54:00:00:00:01 on br0 \(link down, rate 10 Mbit\/s\) on the node, 52:54:00:00:00:01 on br0 in the configuration/);
    assert.deepEqual(diffs[0].fix, { kind: 'update-nic', uuid: N1, mac: '52:54:00:00:00:01', link: 'br0', params: params({ link_state: 'down', rate_mbit: 10 }) });
  });
});
