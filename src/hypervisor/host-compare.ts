/**
 * The runtime file and QEMU against the host (pure): each NIC's tap and
 * bridge, taps nobody owns, and disk files no runtime file references.
 */
import * as path from 'node:path';
import type { HostTap } from './host-inventory';
import { aboutRecord, describeRecord, finding, idOfRecord, type Finding } from './inventory-findings';
import { tapOfNic, type QemuInventory } from './qemu-inventory';
import type { NicRecord, RuntimeData } from './runtime-file';

/** Whether a bridge exists on the host (tap.ts: bridgeExists). */
export type BridgeExists = (link: string) => boolean;

/** The tap QEMU really uses, when the runtime file names another one or none. */
function unrecordedTap(nic: NicRecord, used: string | undefined, device: string): Finding[] {
  if (!used || used === nic.tap) return [];
  return [finding(device, 'tap-not-recorded', `QEMU uses tap ${used}, the runtime file ${nic.tap ? `names ${nic.tap}` : 'names none'}`, { kind: 'record-tap', uuid: nic.uuid, tap: used })];
}

/** The tap on the host, on the NIC's recorded bridge. */
function tapOnHost(nic: NicRecord, tap: string, device: string, host: HostTap[], bridgeExists: BridgeExists): Finding[] {
  const h = host.find((t) => t.name === tap);
  if (!h) return [finding(device, 'tap-missing', `tap ${tap} does not exist on the host`)];
  const rate = tapRate(nic, h, device);
  if ((h.master ?? '') === (nic.link ?? '')) return rate;
  const where = h.master ? `on bridge ${h.master}` : 'on no bridge';
  if (nic.link && !bridgeExists(nic.link)) return [finding(device, 'bridge-missing', `bridge ${nic.link} does not exist on the host (tap ${tap} is ${where})`)];
  const problem = `tap ${tap} is ${where}, the runtime file says ${nic.link ? `bridge ${nic.link}` : 'none'}`;
  return [finding(device, 'tap-wrong-bridge', problem, nic.link ? { kind: 'connect-tap', tap, link: nic.link } : undefined), ...rate];
}

/** The tap's tc limit against the recorded rate (unknown when tc could not tell). */
function tapRate(nic: NicRecord, h: HostTap, device: string): Finding[] {
  const want = nic.rate_mbit ?? 0;
  if (h.rateMbit === undefined || h.rateMbit === want) return [];
  const has = h.rateMbit ? `a limit of ${h.rateMbit} Mbit/s` : 'no limit';
  return [finding(device, 'rate-differs', `tap ${h.name} has ${has}, the runtime file says ${want ? `${want} Mbit/s` : 'none'}`, { kind: 'set-rate', tap: h.name, mbit: want })];
}

/** One settled NIC whose device QEMU has (the others are compareDevices' findings). */
function compareTap(nic: NicRecord, q: QemuInventory, host: HostTap[], bridgeExists: BridgeExists): Finding[] {
  if (nic.state) return [];
  const id = idOfRecord('nic', nic);
  if (id === undefined || !q.peripheral.has(id)) return [];
  const device = describeRecord('nic', nic);
  const used = tapOfNic(q, id);
  const tap = used ?? nic.tap;
  const onHost = tap ? tapOnHost(nic, tap, device, host, bridgeExists) : [];
  return [...unrecordedTap(nic, used, device), ...onHost];
}

/** Each settled NIC's tap: the one QEMU really uses, present on the host, on the recorded bridge. */
export function compareTaps(rt: RuntimeData, q: QemuInventory, host: HostTap[], bridgeExists: BridgeExists): Finding[] {
  return rt.nics.flatMap((nic) => compareTap(nic, q, host, bridgeExists).map(aboutRecord(nic.uuid)));
}

/**
 * Taps nobody owns: named gnttapN, not the tap of any running instance of
 * this node (its runtime file or its QEMU), and held open by no process (a
 * tap some process holds belongs to that process, e.g. another node's QEMU
 * in the same namespace, or a hot-add under way).
 */
export function findStrayTaps(host: HostTap[], owned: ReadonlySet<string>, holders: ReadonlyMap<string, number[]>): Finding[] {
  return host
    .filter((t) => !owned.has(t.name) && !holders.get(t.name)?.length)
    .map((t) =>
      finding(`tap ${t.name}`, 'stray-tap', `no instance of this node uses it and no process holds it open${t.master ? ` (on bridge ${t.master})` : ''}`, {
        kind: 'delete-tap',
        name: t.name,
      }),
    );
}

/**
 * Disk files of the node's own naming that no runtime file references. One
 * that `keep` names (a disk the cluster configuration still lists) is
 * reported without a repair: it is deleted only once nothing wants it.
 */
export function findOrphanFiles(candidates: string[], referenced: ReadonlySet<string>, keep: (file: string) => string | undefined = () => undefined): Finding[] {
  const problem = 'a disk file in the storage directory that no runtime file references';
  return candidates
    .filter((f) => !referenced.has(path.resolve(f)))
    .map((f) => {
      const why = keep(f);
      return why ? finding(`file ${f}`, 'orphan-file', `${problem}; kept: ${why}`) : finding(`file ${f}`, 'orphan-file', problem, { kind: 'delete-file', path: f });
    });
}
