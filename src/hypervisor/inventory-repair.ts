/**
 * The repairs of verify --fix that touch QEMU or the host (inventory-compare.ts
 * and host-compare.ts find them). Runtime-record repairs are KvmInstance's (its "verify
 * repairs" section). Every repair treats "already gone" as done.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { errorMessage } from './errors';
import { removeFdset, removeFdsetsOf } from './fdset-book';
import type { Repair } from './inventory-findings';
import { backendId } from './memory';
import { deleteBlockNode, deleteDevice, ignoreNotFound } from './qdev';
import type { Monitor } from './qmp-client';
import { linkUp } from './native';
import { moveTap, tapBridge } from './tap';
import { setTapRate } from './tap-rate';

const run = promisify(execFile);

/** The repairs that need the instance's monitor. */
export type QemuRepair = Extract<Repair, { kind: 'remove-device' | 'release-netdev' | 'release-block-node' | 'release-fdset' | 'release-memory-backend' }>;

export const isQemuRepair = (r: Repair): r is QemuRepair =>
  ['remove-device', 'release-netdev', 'release-block-node', 'release-fdset', 'release-memory-backend'].includes(r.kind);

/** A NIC's backend: its netdev and a named fd getfd may have left (a leftover may not have reached netdev_add, so closefd stays here). */
async function releaseNetdev(mon: Monitor, id: string): Promise<void> {
  await ignoreNotFound(mon.execute('netdev_del', { id }));
  await ignoreNotFound(mon.execute('closefd', { fdname: id }));
}

/** A disk's backend: its block node and every fdset whose opaque is the id. */
async function releaseBlock(mon: Monitor, id: string): Promise<void> {
  await deleteBlockNode(mon, id);
  await removeFdsetsOf(mon, id);
}

/** device_del, the wait until QEMU's lists no longer have it, then its backends. */
async function removeDevice(mon: Monitor, r: Extract<Repair, { kind: 'remove-device' }>, unplugTimeoutMs: number): Promise<void> {
  await deleteDevice(mon, r.id, unplugTimeoutMs);
  if (r.device === 'nic') await releaseNetdev(mon, r.id);
  else if (r.device === 'disk') await releaseBlock(mon, r.id);
  else if (r.device === 'dimm') await ignoreNotFound(mon.execute('object-del', { id: backendId(r.id) }));
}

export async function applyQemuRepair(mon: Monitor, r: QemuRepair, unplugTimeoutMs: number): Promise<void> {
  switch (r.kind) {
    case 'remove-device':
      return removeDevice(mon, r, unplugTimeoutMs);
    case 'release-netdev':
      return releaseNetdev(mon, r.id);
    case 'release-block-node':
      return releaseBlock(mon, r.id);
    case 'release-fdset':
      return removeFdset(mon, r.id);
    case 'release-memory-backend':
      return ignoreNotFound(mon.execute('object-del', { id: r.id }));
  }
}

/** Deletes a tap nobody holds (a persistent one: its last fd is long closed). */
export async function deleteTap(name: string): Promise<void> {
  if (!fs.existsSync(`/sys/class/net/${name}`)) return;
  try {
    await run('ip', ['link', 'delete', name]);
  } catch (err) {
    throw new Error(`cannot delete tap ${name}: ${errorMessage(err)}`, { cause: err });
  }
}

/** Host repairs that need no monitor: a tap back on its bridge, a stray tap, an orphan file. */
export async function applyHostRepair(r: Extract<Repair, { kind: 'connect-tap' | 'set-rate' | 'delete-tap' | 'delete-file' }>): Promise<void> {
  switch (r.kind) {
    case 'connect-tap':
      moveTap(r.tap, tapBridge(r.tap), r.link); // off the wrong bridge, onto the recorded one
      return linkUp(r.tap);
    case 'set-rate':
      return setTapRate(r.tap, r.mbit);
    case 'delete-tap':
      return deleteTap(r.name);
    case 'delete-file':
      return fs.rmSync(r.path, { force: true });
  }
}
