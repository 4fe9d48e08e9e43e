import * as assert from 'node:assert/strict';
import { parseArgs } from '../../src/master/cli/args';
import { parseBackendParams, parseHvparams } from '../../src/master/cli/parse';
import { prepareJob } from '../../src/master/jobs/ops';
import { checkResizeLimits } from '../../src/master/jobs/executor';
import { ConfigError, type InstanceConfig } from '../../src/master/config/config-store';
import { UsageError } from '../../src/master/validate';
import type { SubmitJobRequest__Output } from '../../src/generated/gnt/master/v1/SubmitJobRequest';

const usage = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: unknown) => e instanceof UsageError && re.test((e as Error).message));

describe('gnt-instance modify -B (backend parameters)', () => {
  it('parses vcpus and memory, 0 meaning unchanged', () => {
    assert.deepEqual(parseBackendParams(['vcpus=2,memory=384M']), { vcpus: 2, memoryMib: 384 });
    assert.deepEqual(parseBackendParams(['vcpus=3']), { vcpus: 3, memoryMib: 0 });
    assert.deepEqual(parseBackendParams(['memory=1G']), { vcpus: 0, memoryMib: 1024 });
    assert.deepEqual(parseBackendParams(['vcpus=2', 'memory=512MiB']), { vcpus: 2, memoryMib: 512 });
    assert.deepEqual(parseBackendParams([]), { vcpus: 0, memoryMib: 0 });
  });

  it('refuses bad syntax, unknown keys, repeats and bad values', () => {
    usage(() => parseBackendParams(['vcpus']), /not KEY=VALUE/);
    usage(() => parseBackendParams(['maxmem=1G']), /unknown parameter "maxmem"/);
    usage(() => parseBackendParams(['vcpus=2,vcpus=3']), /given twice/);
    usage(() => parseBackendParams(['vcpus=2', 'vcpus=3']), /given twice/);
    usage(() => parseBackendParams(['vcpus=0']), /vcpus "0" must be a whole number from 1/);
    usage(() => parseBackendParams(['vcpus=two']), /vcpus "two"/);
    usage(() => parseBackendParams(['vcpus=']), /empty/);
    usage(() => parseBackendParams(['memory=384']), /has no unit/);
    usage(() => parseBackendParams(['memory=1K']), /whole number of MiB/);
    usage(() => parseBackendParams(['memory=-1G']), /negative/);
  });

  it('-B and --backend-parameters are the same repeated option', () => {
    const spec = { multi: ['backend-parameters'], flags: ['hotplug'], aliases: { B: 'backend-parameters' } };
    const a = parseArgs(['--hotplug', '-B', 'vcpus=2', '--backend-parameters', 'memory=384M', 'web1'], spec);
    assert.deepEqual(a.all('backend-parameters'), ['vcpus=2', 'memory=384M']);
    assert.deepEqual(parseBackendParams(a.all('backend-parameters')), { vcpus: 2, memoryMib: 384 });
  });

  it('accepts hvparam memory_hotplug=acpi|virtio-mem|none only', () => {
    assert.deepEqual(parseHvparams(['memory_hotplug=virtio-mem']), { memory_hotplug: 'virtio-mem' });
    usage(() => parseHvparams(['memory_hotplug=dimm']), /memory_hotplug="dimm" is not valid: it must be one of acpi, virtio-mem, none/);
  });

  describe('in the master', () => {
    const modify = (m: object): SubmitJobRequest__Output =>
      ({ op: 'instanceModify', instanceModify: { name: 'web1', nics: [], disks: [], hotplug: 'HOTPLUG', vcpus: 0, memoryMib: '0', waitGuest: 'WAIT_GUEST_MODE_UNSPECIFIED', waitGuestTimeoutS: 0, ...m } }) as SubmitJobRequest__Output;

    it('a -B change alone is a modify op carrying vcpus and memory', () => {
      const p = prepareJob(modify({ vcpus: 2, memoryMib: '384' }));
      assert.equal(p.op.type, 'instance-modify');
      assert.ok(p.op.type === 'instance-modify');
      assert.equal(p.op.vcpus, 2);
      assert.equal(p.op.memoryMib, 384);
      usage(() => prepareJob(modify({})), /nothing to change/);
      usage(() => prepareJob(modify({ vcpus: -1 })), /vcpus/);
      usage(() => prepareJob(modify({ memoryMib: '-5' })), /memory/);
    });

    it('checks the limits of the instance', () => {
      const inst = { name: 'web1', vcpus: 1, maxvcpus: 4, memory_mib: 256, maxmem_mib: 1024 } as InstanceConfig;
      const refused = (fn: () => void, re: RegExp) =>
        assert.throws(fn, (e: unknown) => e instanceof ConfigError && e.code === 'INVALID_ARGUMENT' && re.test(e.message));
      checkResizeLimits(inst, 4, 1024);
      checkResizeLimits(inst, 0, 0);
      refused(() => checkResizeLimits(inst, 5, 0), /1 to 4 vCPUs/);
      refused(() => checkResizeLimits(inst, 0, 2048), /at most 1024 MiB/);
    });
  });
});
