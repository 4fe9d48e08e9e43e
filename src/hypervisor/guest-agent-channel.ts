/**
 * The guest agent channel: a virtio-serial controller at a fixed PCI slot of
 * the root bus with one port, `org.qemu.guest_agent.0`, whose host end is a
 * unix socket in the instance directory (root-only, like the QMP socket:
 * QEMU creates it before it drops its privileges, in a 0700 directory).
 *
 * The slot is one the layout always kept free: pc slot 3 (the last of the
 * four slots the machine reserves, empty under -nodefaults) and q35 slot
 * 0x1e (above the root ports, below the ICH9 functions). So an instance
 * created before the channel existed gets it at its next start without any
 * device moving. A start records `agent_channel` in the runtime file; an
 * incoming migration starts the channel only when the source's file says
 * its QEMU has it, so source and target always agree.
 */
import type { MachineFamily } from './pci-topology';

export const AGENT_PORT_NAME = 'org.qemu.guest_agent.0';
/** qdev ids of the controller and the port (recorded ids for verify). */
export const AGENT_CONTROLLER_ID = 'gnt-vserial0';
export const AGENT_PORT_ID = 'gnt-qga-port0';
const AGENT_CHARDEV_ID = 'gnt-qga0';

/** The root-bus slot of the controller. */
export const agentChannelSlot = (family: MachineFamily): number => (family === 'q35' ? 0x1e : 3);

/** QEMU arguments of the channel; `socketPath` is passed as a QemuOpts value (commas doubled by the caller's rules). */
export function agentChannelArgs(socketPath: string, family: MachineFamily): string[] {
  if (/[\0\n]/.test(socketPath)) throw new Error('the guest agent socket path contains a NUL or newline character');
  const bus = family === 'q35' ? 'pcie.0' : 'pci.0';
  return [
    '-device', `virtio-serial-pci,id=${AGENT_CONTROLLER_ID},bus=${bus},addr=0x${agentChannelSlot(family).toString(16)}`,
    '-chardev', `socket,id=${AGENT_CHARDEV_ID},path=${socketPath.replace(/,/g, ',,')},server=on,wait=off`,
    '-device', `virtserialport,id=${AGENT_PORT_ID},bus=${AGENT_CONTROLLER_ID}.0,chardev=${AGENT_CHARDEV_ID},name=${AGENT_PORT_NAME}`,
  ];
}
