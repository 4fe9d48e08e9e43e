/**
 * The KVM runtime file of one instance: everything needed to start an
 * identical QEMU again (after a stop, or on a migration target).
 *
 * Format (version 2, JSON):
 *   { "version": 2, "instance": NAME,
 *     "kvm_cmd": [fixed, machine-defining QEMU arguments],
 *     "nics": [{uuid, mac, link?, pci, tap?, state?, link_state?, rate_mbit?, queues?, model?}],
 *     "hvparams": {...},
 *     "block_devices": [{uuid, path, pci, state?}] }
 *
 * Ganeti's files are JSON lists: [kvm_cmd, nics, hvparams] (old style, disks
 * inside kvm_cmd) or [kvm_cmd, nics, hvparams, block_devices]. Both load; an
 * old-style file loads with no block devices, and every save writes version 2.
 *
 * On disk, a version 2 file also carries "journal_mark": {"base", "seq"}, the mark
 * of the compaction that wrote it, and most saves are records appended to the
 * journal beside it (runtime.journal; runtime-journal.ts, runtime-store.ts):
 * the instance's state is the runtime file plus the newest valid journal
 * record of its base. Read and write runtime files only through
 * loadRuntimeFile / saveRuntimeFile / RuntimeStore. To edit one by hand,
 * load it, change it and save it with saveRuntimeFile (a compaction: the
 * journal's records no longer apply).
 */
import type { DiskBacking } from './disk-template';
import type { MigrationMark } from './migration';
import type { OperationJournal } from './operations';
import type { ResourceState } from './resize';
import type { DiskIoLimits } from './disk-io-limits';
import { RUNTIME_VERSION } from './runtime-parse';

export { RUNTIME_VERSION, parseRuntime, parseRuntimeValue, serializeRuntime } from './runtime-parse';
export { loadRuntimeFile, removeInstanceDir, saveRuntimeFile, RuntimeStore, type SaveHooks } from './runtime-store';

/** A device whose hotplug or unplug was started but not confirmed. */
export type PendingState = 'attaching' | 'detaching';

export interface NicRecord {
  uuid: string;
  mac: string;
  /** Bridge the tap is attached to; none for an unattached tap. */
  link?: string;
  /** Slot on its PCI bus; null for devices from old runtime files. */
  pci: number | null;
  /** The PCI bus's qdev id (a bridge or root port, pci-topology.ts); absent: the machine's root bus. */
  bus?: string;
  /** Name of the tap currently backing the NIC (host side). */
  tap?: string;
  state?: PendingState;
  /** "down": QMP set_link down, re-applied at every start and on a migration target; absent: up. */
  link_state?: 'up' | 'down';
  /** Bandwidth limit on the tap (tc tbf), Mbit/s; absent: none. */
  rate_mbit?: number;
  /** Tap queues (IFF_MULTI_QUEUE); absent: one. */
  queues?: number;
  /** Device model (nic.ts NIC_MODELS); absent: virtio. */
  model?: 'virtio' | 'e1000' | 'rtl8139';
}

export interface DiskRecord extends DiskBacking {
  uuid: string;
  /** Host path: a regular file or a block device; "rbd:POOL/IMAGE" for an RBD image (never opened). */
  path: string;
  pci: number | null;
  /** As NicRecord.bus. */
  bus?: string;
  state?: PendingState;
  /** The node created this file for the disk: it is deleted when the disk goes. */
  created?: boolean;
  /** Size after the last grow (disk-grow.ts); absent: the file's own size. */
  size_bytes?: number;
  /** A grow in progress to this size (its intent; disk-grow.ts settles it after a crash). */
  grow_to?: number;
  /** I/O limits (disk-io-limits.ts), applied at every start and on a migration target; absent: none. */
  io_limits?: DiskIoLimits;
}

/** A disk on the virtio-scsi controller (scsi-disk.ts): a LUN, no PCI slot of its own. */
export interface ScsiDiskRecord extends DiskBacking {
  uuid: string;
  /** As DiskRecord.path. */
  path: string;
  /** Its address on the controller (scsi-luns.ts): scsi-id and LUN, channel 0. */
  target: number;
  lun: number;
  state?: PendingState;
  created?: boolean;
  /** As DiskRecord. */
  size_bytes?: number;
  grow_to?: number;
  io_limits?: DiskIoLimits;
}

/** The virtio-scsi controller the SCSI disks sit on; it holds one PCI slot. */
export interface ScsiControllerRecord {
  id: string;
  pci: number;
  /** As NicRecord.bus. */
  bus?: string;
}

/** A file-backed virtio-pmem device (pmem.ts): a PCI device whose memory takes maxmem room. */
export interface PmemRecord {
  uuid: string;
  /** The backing file, made by the node beneath the storage directory. */
  path: string;
  sizeMiB: number;
  pci: number | null;
  /** As NicRecord.bus. */
  bus?: string;
  state?: PendingState;
  created?: boolean;
}

export type HvValue = string | number | boolean;
export type HvParams = Record<string, HvValue>;

export interface RuntimeData {
  version: typeof RUNTIME_VERSION;
  instance: string;
  kvm_cmd: string[];
  nics: NicRecord[];
  hvparams: HvParams;
  block_devices: DiskRecord[];
  /** Disks on the virtio-scsi controller (absent: none). */
  scsi_disks?: ScsiDiskRecord[];
  /** The virtio-scsi controller, once created (at a start with SCSI disks, or with the first hot-added one). */
  scsi_controller?: ScsiControllerRecord;
  /** virtio-pmem devices (absent: none). */
  pmem_devices?: PmemRecord[];
  /** vCPUs and memory: boot values, limits and hot-added devices (absent in old files: no resize). */
  resources?: ResourceState;
  /** Set while this node is the source or the target of a live migration. */
  migration?: MigrationMark;
  /** Operation ids and outcomes (operations.ts); absent in older files. */
  operations?: OperationJournal;
  /** QEMU runs with the guest agent channel (guest-agent-channel.ts): set by every start; absent in older files. */
  agent_channel?: true;
}

