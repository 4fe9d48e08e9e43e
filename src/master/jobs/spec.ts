/** The node-facing view of an instance's configuration: its node and its InstanceStart spec. */
import type { InstanceConfig } from '../config/config-store';
import type { NodeTarget } from '../node-rpc';
import type { InstanceSpec } from '../../generated/gnt/node/v1/InstanceSpec';
import { diskBackingProto } from './disk-backing';

export const nodeTarget = (inst: InstanceConfig): NodeTarget => ({ name: inst.node.name, address: inst.node.address });

/**
 * The whole spec the node needs to start the instance (InstanceStart).
 * A device whose removal is pending (the guest had not released it) is left
 * out: a fresh start is where its removal completes.
 */
export function instanceSpec(inst: InstanceConfig): InstanceSpec {
  return {
    name: inst.name,
    uuid: inst.uuid,
    vcpus: inst.vcpus,
    maxvcpus: inst.maxvcpus,
    memoryMib: inst.memory_mib,
    maxmemMib: inst.maxmem_mib,
    kernel: inst.kernel,
    initrd: inst.initrd,
    kernelArgs: inst.kernel_args,
    nics: inst.nics.filter((n) => !n.removal_pending).map((n) => ({ uuid: n.uuid, mac: n.mac, link: n.link, pci: -1, linkState: n.link_state, rateMbit: n.rate_mbit, queues: n.queues, model: n.model })),
    disks: inst.disks
      .filter((d) => !d.removal_pending)
      .map((d) => ({ uuid: d.uuid, sizeBytes: d.size_bytes, pci: -1, diskBus: d.disk_bus ?? '', diskType: d.disk_type ?? '', ...diskBackingProto(d.template ?? '', d.adopt ?? '') })),
    hvparams: inst.hvparams,
  };
}
