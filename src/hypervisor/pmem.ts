/**
 * virtio-pmem devices: a file the node created beneath the storage directory,
 * mapped into the guest as persistent memory (the guest sees /dev/pmemN).
 * Facts of QEMU 10 this module is built on (tried, see docs and
 * test/integration/pmem.test.ts):
 *   - memory-backend-file opens `mem-path` with a plain open(): /dev/fdset/N
 *     is refused ("can't open backing store /dev/fdset/0 ... No such file").
 *     So we pass the fd with add-fd as for disks and name it as
 *     /proc/self/fd/<QEMU's fd number>: QEMU opens its own fd's file again
 *     and no host path of ours. That reopen is checked against the file's
 *     owner, so the file belongs to the user QEMU runs as (fchown on our fd
 *     before it is passed); a QEMU in a chroot has no /proc and is refused.
 *   - device_del of a virtio-pmem-pci is refused ("this virtio based memory
 *     devices cannot be unplugged"): a hot remove is refused up front; the
 *     device goes at the next stop/start (a config change).
 *   - it takes room in the device memory region (maxmem - memory), as a DIMM
 *     does: pmemRoomProblem counts both.
 */
import * as fs from 'node:fs';
import { deviceId } from './device-id';
import { addFd } from './disk';
import { removeFdset, removeFdsetsOf } from './fdset-book';
import { HypervisorError, InvalidArgumentError } from './errors';
import type { HostPathPolicy, OpenedHostFile } from './host-paths';
import { inTransaction } from './hotplug-transaction';
import { deleteDevice, deviceAddStep, ignoreNotFound, pciPlacement } from './qdev';
import { DEFAULT_UNPLUG_TIMEOUTS } from './unplug-timeouts';
import type { Monitor } from './qmp-client';
import type { HvParams, PmemRecord, RuntimeData } from './runtime-file';
import type { ResourceState } from './resize';

/**
 * pmem sizes are whole multiples of this: the x86-64 guest's memory block
 * size, the step of ACPI DIMMs too. QEMU places device memory one device
 * after the other, so a pmem device of another size would leave every DIMM
 * added after it off the 128 MiB boundary, and the guest cannot add such
 * memory (its MemTotal stays; found by the kill test with a 32 MiB pmem).
 */
export const PMEM_ALIGN_MIB = 128;

export const pmemId = (rec: PmemRecord, slot: number): string => deviceId('pmem', rec.uuid, slot, rec.bus);
const backendOf = (id: string): string => `mem-${id}`;

/** Why a hot remove is refused (QEMU cannot unplug virtio-pmem). */
export const PMEM_UNPLUG_REFUSAL =
  'QEMU cannot hot-unplug a virtio-pmem device ("this virtio based memory devices cannot be unplugged"); remove it without --hotplug: it goes at the next stop and start';

export function assertPmemSize(sizeMiB: number): void {
  if (!Number.isInteger(sizeMiB) || sizeMiB < PMEM_ALIGN_MIB || sizeMiB % PMEM_ALIGN_MIB !== 0)
    throw new InvalidArgumentError(`a pmem device must be a whole multiple of ${PMEM_ALIGN_MIB} MiB (the guest's memory block, as for DIMMs), not ${sizeMiB} MiB`);
}

/** The device memory the instance's DIMMs, virtio-mem region and pmem devices hold beyond its boot memory. */
export function deviceMemoryMiB(r: ResourceState, data: RuntimeData): { dimmMiB: number; virtioMemMiB: number; pmemMiB: number } {
  return {
    dimmMiB: r.dimms.reduce((n, d) => n + d.sizeMiB, 0),
    virtioMemMiB: r.virtioMem?.maxMiB ?? 0,
    pmemMiB: (data.pmem_devices ?? []).reduce((n, p) => n + p.sizeMiB, 0),
  };
}

/** Why `sizeMiB` more of pmem does not fit into maxmem; undefined when it fits. */
export function pmemRoomProblem(instance: string, r: ResourceState, data: RuntimeData, sizeMiB: number): string | undefined {
  const { dimmMiB, virtioMemMiB, pmemMiB } = deviceMemoryMiB(r, data);
  const room = r.maxMemoryMiB - r.bootMemoryMiB;
  const used = dimmMiB + virtioMemMiB + pmemMiB;
  if (used + sizeMiB <= room) return undefined;
  return (
    `instance ${instance} has ${room} MiB of memory device room (maxmem ${r.maxMemoryMiB} MiB - memory ${r.bootMemoryMiB} MiB); ` +
    `DIMMs hold ${dimmMiB} MiB, virtio-mem ${virtioMemMiB} MiB, pmem ${pmemMiB} MiB, so ${room - used} MiB are left and a ${sizeMiB} MiB pmem device does not fit (raise maxmem and restart it)`
  );
}

export function assertPmemRoom(instance: string, r: ResourceState | undefined, data: RuntimeData, sizeMiB: number): void {
  if (!r) throw new InvalidArgumentError(`instance ${instance} has no memory record (runtime file of an older version); restart it once first`);
  const problem = pmemRoomProblem(instance, r, data, sizeMiB);
  if (problem) throw new HypervisorError('RESOURCE_EXHAUSTED', problem);
}

/** Refuses what cannot work before anything is touched: a QEMU in a chroot has no /proc/self/fd. */
export function assertPmemPossible(hv: HvParams, instance: string): void {
  if (typeof hv.chroot === 'string' && hv.chroot !== '')
    throw new InvalidArgumentError(`instance ${instance} runs QEMU in a chroot (${hv.chroot}), where it cannot open its pmem file as /proc/self/fd/N; pmem needs an instance without chroot`);
}

/** The uid and gid QEMU runs as by the hvparams (qemu-command.ts securityArgs); undefined: as this process. */
export function qemuOwner(hv: HvParams): { uid: number; gid: number } | undefined {
  const model = hv.security_model;
  if (model === 'pool' && hv.security_uid !== undefined) return { uid: Number(hv.security_uid), gid: Number(hv.security_uid) };
  if (model !== 'user' || typeof hv.security_domain !== 'string') return undefined;
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.split(':')[0] === hv.security_domain);
  const f = line?.split(':');
  if (!f || f.length < 4) throw new InvalidArgumentError(`QEMU user ${hv.security_domain} is not in /etc/passwd; its pmem file cannot be given to it`);
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

/** Opens the backing file and gives it to QEMU's user (see above); the caller closes it. */
export function openPmemFile(hostPaths: HostPathPolicy, rec: PmemRecord, hv: HvParams): OpenedHostFile {
  const file = hostPaths.openDisk(rec.path);
  try {
    if (file.kind !== 'file') throw new InvalidArgumentError(`pmem backing ${rec.path} is not a regular file`);
    const owner = qemuOwner(hv);
    if (owner) fs.fchownSync(file.fd, owner.uid, owner.gid);
    return file;
  } catch (err) {
    file.close();
    throw err;
  }
}

function backendProps(rec: PmemRecord, id: string, qemuFd: number): Record<string, unknown> {
  return { 'qom-type': 'memory-backend-file', id: backendOf(id), 'mem-path': `/proc/self/fd/${qemuFd}`, size: rec.sizeMiB * 1024 * 1024, share: true };
}

const deviceProps = (id: string, rec: PmemRecord, slot: number): Record<string, string> => ({ driver: 'virtio-pmem-pci', id, memdev: backendOf(id), ...pciPlacement(rec, slot) });

const toArg = (props: Record<string, unknown>, skip: string): string =>
  [props[skip], ...Object.entries(props).filter(([k]) => k !== skip).map(([k, v]) => `${k}=${v === true ? 'on' : String(v)}`)].join(',');

/** QEMU arguments that create the device at boot, its file at child fd `childFd` (QEMU's own fd number too). */
export function pmemBootArgs(rec: PmemRecord, slot: number, childFd: number): string[] {
  const id = pmemId(rec, slot);
  return ['-object', toArg(backendProps(rec, id, childFd), 'qom-type'), '-device', toArg(deviceProps(id, rec, slot), 'driver')];
}

/** Hot-adds the device at `slot`. Undoes every step on failure; QEMU keeps no fdset once the backend has its own open. */
export async function attachPmem(mon: Monitor, rec: PmemRecord, slot: number, hostPaths: HostPathPolicy, hv: HvParams): Promise<void> {
  const id = pmemId(rec, slot);
  await inTransaction(`hot-add of pmem ${id}`, async (tx) => {
    let file: OpenedHostFile | undefined;
    const closeFd = (): void => file?.close();
    try {
      const opened = await tx.step('open pmem file', () => openPmemFile(hostPaths, rec, hv), closeFd);
      file = opened;
      const added = await tx.step('add-fd', () => addFd(mon, id, opened.fd), (r) => removeFdset(mon, r['fdset-id']));
      closeFd();
      // One pipeline; the remove-fd runs whatever the two before it did, and takes the add-fd's undo over.
      await tx.pipeline([
        { name: 'object-add', send: () => mon.execute('object-add', backendProps(rec, id, added.fd)), undo: () => mon.execute('object-del', { id: backendOf(id) }) },
        deviceAddStep(mon, id, deviceProps(id, rec, slot), DEFAULT_UNPLUG_TIMEOUTS.disk),
        { name: 'remove-fd', send: () => removeFdset(mon, added['fdset-id']), takesOver: ['add-fd'] }, // the backend holds its own open
      ]);
    } finally {
      closeFd();
    }
  });
}

/** QEMU refuses it; kept for the interface (a device the guest never had is simply absent). */
export async function detachPmem(mon: Monitor, rec: PmemRecord, slot: number, timeoutMs: number): Promise<void> {
  await deleteDevice(mon, pmemId(rec, slot), timeoutMs);
}

/** Frees the backend and any fdset left; harmless when gone. */
export async function releasePmem(mon: Monitor, rec: PmemRecord, slot: number): Promise<void> {
  const id = pmemId(rec, slot);
  await ignoreNotFound(mon.execute('object-del', { id: backendOf(id) }));
  await removeFdsetsOf(mon, id);
}
