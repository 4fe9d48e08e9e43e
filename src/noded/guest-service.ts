/**
 * GuestInfo and GuestWait: the guest agent of a running instance, over RPC.
 * The agent logic is in src/hypervisor (guest-agent-view.ts, guest-wait.ts);
 * this file checks the instance, converts to and from proto, and bounds
 * every wait.
 */
import type * as grpc from '@grpc/grpc-js';
import type { GuestAgentView } from '../generated/gnt/node/v1/GuestAgentView';
import type { GuestWaitReply } from '../generated/gnt/node/v1/GuestWaitReply';
import type { GuestWaitRequest__Output } from '../generated/gnt/node/v1/GuestWaitRequest';
import type { InstanceRef__Output } from '../generated/gnt/node/v1/InstanceRef';
import { noAgentView, readGuestAgentView, type GuestAgentView as View } from '../hypervisor/guest-agent-view';
import { waitForGuestDevice, type GuestDevice } from '../hypervisor/guest-wait';
import type { InstanceRegistry } from './instance-registry';
import { invalidArgument } from './status';
import type { UnaryWrapper } from './verify-service';

/** One GuestWait call waits at most this long (a short call: the master repeats it up to its --wait-guest-timeout). */
export const MAX_WAIT_MS = 10_000;
const DEFAULT_WAIT_MS = MAX_WAIT_MS;
const MAC_RULE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
const PCI_RULE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;
const SCSI_RULE = /^\d{1,3}:\d{1,5}:\d{1,5}$/;

function toProto(v: View): GuestAgentView {
  return {
    answers: v.answers,
    error: v.error,
    agentVersion: v.agentVersion,
    os: v.os,
    kernelRelease: v.kernelRelease,
    interfaces: v.interfaces.map((i) => ({ name: i.name, mac: i.mac, addresses: i.addresses })),
    disks: v.disks.map((d) => ({ name: d.name, busType: d.busType, pci: d.pci, scsi: d.scsi })),
    vcpusOnline: v.vcpusOnline,
    vcpusListed: v.vcpusListed,
    memoryBlocksOnline: v.memoryBlocksOnline,
    memoryBlocksListed: v.memoryBlocksListed,
    memoryBlockBytes: String(v.memoryBlockBytes),
  };
}

/** Why the instance's agent cannot be asked at all, or undefined when it can. */
function whyNoChannel(registry: InstanceRegistry, name: string): string | undefined {
  const inst = registry.get(name);
  if (inst.pid === undefined) return `instance ${name} is not running`;
  if (!inst.runtime.agent_channel)
    return `instance ${name} has no guest agent channel: its QEMU was started before gnt-hotplug added one (it gets one at its next start)`;
  return undefined;
}

/** The device a GuestWait asks for, checked. */
export function guestDeviceOf(r: GuestWaitRequest__Output): GuestDevice {
  switch (r.kind) {
    case 'nic':
      if (!MAC_RULE.test(r.mac)) throw invalidArgument(`GuestWait nic: mac "${r.mac.slice(0, 40)}" is not a MAC address`);
      return { kind: 'nic', mac: r.mac.toLowerCase() };
    case 'disk':
      if (r.scsi) {
        if (!SCSI_RULE.test(r.scsi)) throw invalidArgument(`GuestWait disk: scsi "${r.scsi.slice(0, 40)}" is not channel:target:lun`);
        return { kind: 'disk', scsi: r.scsi };
      }
      if (!PCI_RULE.test(r.pci)) throw invalidArgument(`GuestWait disk: pci "${r.pci.slice(0, 40)}" is not a PCI address such as 0000:00:06.0`);
      return { kind: 'disk', pci: r.pci };
    case 'vcpus':
      if (!Number.isInteger(r.vcpus) || r.vcpus < 1 || r.vcpus > 4096) throw invalidArgument(`GuestWait vcpus: ${r.vcpus} is not a vCPU count`);
      return { kind: 'vcpus', online: r.vcpus };
    case 'memory':
      return { kind: 'memory' };
    default:
      throw invalidArgument(`GuestWait: kind "${r.kind.slice(0, 20)}" is not nic, disk, vcpus or memory`);
  }
}

export function guestHandlers(registry: InstanceRegistry, unary: UnaryWrapper): {
  GuestInfo: grpc.handleUnaryCall<InstanceRef__Output, GuestAgentView>;
  GuestWait: grpc.handleUnaryCall<GuestWaitRequest__Output, GuestWaitReply>;
} {
  return {
    GuestInfo: unary('GuestInfo', (r: InstanceRef__Output) => r.name, async (r) => {
      const why = whyNoChannel(registry, r.name);
      return toProto(why ? noAgentView(why) : await readGuestAgentView(registry.guestAgent(r.name)));
    }),
    GuestWait: unary('GuestWait', (r: GuestWaitRequest__Output) => r.instance, async (r): Promise<GuestWaitReply> => {
      const device = guestDeviceOf(r);
      const timeout = r.timeoutMs > 0 ? Math.min(r.timeoutMs, MAX_WAIT_MS) : DEFAULT_WAIT_MS;
      const why = whyNoChannel(registry, r.instance);
      if (why) return { seen: false, noAgent: true, waitedMs: '0', onlinedVcpus: 0, onlinedMemoryBlocks: 0, message: `${why}; not waiting for the guest` };
      const w = await waitForGuestDevice(registry.guestAgent(r.instance), device, timeout);
      return { seen: w.seen, noAgent: w.noAgent, waitedMs: String(w.waitedMs), onlinedVcpus: w.onlinedVcpus, onlinedMemoryBlocks: w.onlinedMemoryBlocks, message: w.message };
    }),
  };
}
