import { strict as assert } from 'node:assert';
import { InvalidArgumentError } from '../../src/hypervisor/errors';
import { buildFixedCommand } from '../../src/hypervisor/qemu-command';
import type { RuntimeData } from '../../src/hypervisor/runtime-file';
import { validateRuntime } from '../../src/hypervisor/runtime-validate';

function good(): RuntimeData {
  return {
    version: 2,
    instance: 'web1',
    kvm_cmd: buildFixedCommand({ name: 'web1', memoryMiB: 256, maxMemoryMiB: 512, vcpus: 1, maxVcpus: 2, kernel: '/boot/vmlinuz', kernelArgs: 'console=ttyS0' }),
    nics: [{ uuid: 'n-1', mac: '52:54:00:00:00:01', link: 'br0', pci: 4, tap: 'gnttap3' }],
    block_devices: [{ uuid: 'd-1', path: '/srv/gnt/web1/d-1.img', pci: 5, created: true }],
    hvparams: { security_model: 'pool', security_uid: 40001, unplug_timeout_nic: '10' },
    resources: {
      bootVcpus: 1, maxVcpus: 2, bootMemoryMiB: 256, maxMemoryMiB: 512, memoryHotplug: 'acpi',
      cpus: [{ id: 'vcpu-s1-c0-t0', driver: 'qemu64-x86_64-cpu', props: { 'socket-id': 1, 'core-id': 0, 'thread-id': 0 } }],
      dimms: [{ id: 'dimm0', sizeMiB: 128 }],
      cpuThreads: { pid: 1234, created: 2 },
    },
    migration: { role: 'source', peer: 'node2', since: '2026-12-02T00:00:00.000Z', uri: 'tcp:10.0.0.2:4444' },
    operations: { epoch: 'e-1', revision: 3, records: [{ id: 'op-1', kind: 'nic', action: 'add', uuid: 'n-1', state: 'succeeded', revision: 3, startedAt: 'x' }] },
  };
}

function refused(change: (d: RuntimeData & Record<string, unknown>) => void, why: RegExp): void {
  const d = good() as RuntimeData & Record<string, unknown>;
  change(d);
  assert.throws(() => validateRuntime(d), (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError, String(err));
    assert.match(err.message, why);
    assert.ok(err.message.length < 400, 'quotes only an excerpt');
    return true;
  });
}

describe('runtime file validator (src/hypervisor/runtime-validate.ts)', () => {
  it('accepts what this software writes', () => validateRuntime(good()));

  describe('disk templates (a carried file with blockdev and rbd disks)', () => {
    const withDisk = (disk: Record<string, unknown>) => (d: RuntimeData & Record<string, unknown>) => d.block_devices.push({ uuid: 'd-2', pci: 6, ...disk } as never);
    it('accepts a blockdev disk and an rbd image', () => {
      const d = good();
      withDisk({ path: '/dev/loop3', template: 'blockdev' })(d as never);
      withDisk({ uuid: 'd-3', pci: 7, path: 'rbd:rbd/img', template: 'rbd', rbd: { pool: 'rbd', image: 'img' } })(d as never);
      validateRuntime(d);
    });
    it('refuses an unknown template', () => refused(withDisk({ path: '/dev/loop3', template: 'nfs' }), /template="nfs" is not valid: must be blockdev or rbd/));
    it('refuses an rbd path that is not its image', () =>
      refused(withDisk({ path: 'rbd:rbd/other', template: 'rbd', rbd: { pool: 'rbd', image: 'img' } }), /rbd:POOL\/IMAGE of its rbd entry/));
    it('refuses rbd fields on a file disk', () => refused(withDisk({ path: '/srv/gnt/web1/x.img', rbd: { pool: 'rbd', image: 'img' } }), /belongs to template rbd only/));
  });

  describe('resources', () => {
    it('refuses an injected CPU driver', () =>
      refused((d) => (d.resources!.cpus[0].driver = 'virtio-net-pci,netdev=x'), /resources.cpus\[0\].driver="virtio-net-pci,netdev=x" is not valid: a vCPU type/));
    it('refuses a non-CPU QEMU type as driver', () =>
      refused((d) => (d.resources!.cpus[0].driver = 'pc-dimm'), /resources.cpus\[0\].driver="pc-dimm"/));
    it('refuses extra CPU properties', () =>
      refused((d) => ((d.resources!.cpus[0].props as Record<string, unknown>).romfile = 1), /resources.cpus\[0\].props.romfile="1" is not valid: unknown field/));
    it('refuses non-integer topology ids', () =>
      refused((d) => ((d.resources!.cpus[0].props as Record<string, unknown>)['core-id'] = '0,x=1'), /props.core-id="0,x=1" is not valid: must be a whole number/));
    it('refuses an id that is not the topology\'s', () =>
      refused((d) => (d.resources!.cpus[0].id = 'evil'), /resources.cpus\[0\].id="evil" is not valid: must be the id of its topology \(vcpu-s1-c0-t0\)/));
    it('refuses DIMMs beyond maxmem', () =>
      refused((d) => (d.resources!.dimms = [{ id: 'dimm0', sizeMiB: 128 }, { id: 'dimm1', sizeMiB: 256 }]), /resources.dimms="384" is not valid: DIMMs add up to more than/));
    it('refuses a bad DIMM id', () => refused((d) => (d.resources!.dimms[0].id = 'x,y'), /resources.dimms\[0\].id="x,y"/));
    it('refuses unknown fields in resources', () => refused((d) => ((d.resources as unknown as Record<string, unknown>).extra = 1), /resources.extra="1" is not valid: unknown field/));
  });

  describe('nics and disks', () => {
    it('refuses a bad MAC', () => refused((d) => (d.nics[0].mac = '00:00:00:00:00:00'), /nics\[0\].mac="00:00:00:00:00:00" is not valid: MAC address "00:00:00:00:00:00" is all zeros/));
    it('refuses a multicast MAC', () => refused((d) => (d.nics[0].mac = '01:00:5e:00:00:01'), /nics\[0\].mac=.*multicast/));
    it('refuses a tap name we do not make', () => refused((d) => (d.nics[0].tap = 'eth0'), /nics\[0\].tap="eth0" is not valid: a tap this software names/));
    it('refuses a bad link name', () => refused((d) => (d.nics[0].link = 'br0,script=/x'), /nics\[0\].link="br0,script=\/x"/));
    it('refuses a bad uuid', () => refused((d) => (d.nics[0].uuid = '../x'), /nics\[0\].uuid="..\/x"/));
    it('refuses a PCI slot out of range', () => refused((d) => (d.block_devices[0].pci = 32), /block_devices\[0\].pci="32" is not valid: must be a whole number from 0 to 31/));
    it('refuses an unknown state', () => refused((d) => ((d.nics[0] as unknown as Record<string, unknown>).state = 'gone'), /nics\[0\].state="gone"/));
    it('refuses a relative disk path', () => refused((d) => (d.block_devices[0].path = 'x.img'), /block_devices\[0\].path="x.img" is not valid: must be an absolute path/));
  });

  describe('hvparams, command, marks', () => {
    it('refuses an unknown hvparam', () => refused((d) => (d.hvparams.cpu_type = 'host'), /runtime file of web1: unknown hvparam "cpu_type"/));
    it('refuses the security_domain injection', () =>
      refused((d) => (d.hvparams = { security_model: 'user', security_domain: 'nobody,chroot=/nonexistent' }), /hvparam security_domain="nobody,chroot=\/nonexistent" is not valid/));
    it('refuses an extra QEMU option', () => refused((d) => d.kvm_cmd.push('-device', 'x'), /has an option this node does not accept: "-device"/));
    it('refuses a bad migration peer', () => refused((d) => (d.migration!.peer = 'a b'), /migration.peer="a b"/));
    it('refuses a malformed operation record', () => refused((d) => ((d.operations!.records[0] as unknown as Record<string, unknown>).kind = 'shell'), /operations.records\[0\].kind="shell"/));
  });
});
