/** Booting the test guest (built by scripts/build-guest.sh) under the hypervisor layer. */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GuestConsole } from '../../src/hypervisor/guest-console';
import { KvmInstance, type DiskRequest, type KvmInstanceOptions, type NicRequest } from '../../src/hypervisor/kvm-instance';
import { HostPathPolicy } from '../../src/hypervisor/host-paths';
import type { HvParams } from '../../src/hypervisor/runtime-file';

export const REPO = path.resolve(__dirname, '../../..');
export const GUEST_DIR = path.join(REPO, '.cache/guest');
export const BOOT_TIMEOUT_MS = 60_000;
export const SEEN_TIMEOUT_MS = 30_000;

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `gnt-${prefix}-`));
}

export function guestFiles(): { kernel: string; initrd: string } {
  const kernel = path.join(GUEST_DIR, 'vmlinuz');
  const initrd = path.join(GUEST_DIR, 'initrd.gz');
  if (!fs.existsSync(kernel) || !fs.existsSync(initrd))
    throw new Error(`test guest missing in ${GUEST_DIR}: run scripts/build-guest.sh`);
  return { kernel, initrd };
}

export interface BootOptions {
  name?: string;
  nics?: NicRequest[];
  disks?: DiskRequest[];
  hvparams?: HvParams;
  memoryMiB?: number;
  /** QEMU machine type (default pc). */
  machine?: string;
  /** Extra kernel arguments, e.g. gnt.memonline=online_movable. */
  kernelArgs?: string;
  instanceOptions?: KvmInstanceOptions;
  /** The directory the test keeps its disk files in (the policy's storage directory; default: the data dir). */
  storageDir?: string;
  /** Block devices the test may hot-add (the policy's allow-list). */
  blockDevices?: string[];
}

export interface BootedGuest {
  dataDir: string;
  instance: KvmInstance;
  console: GuestConsole;
  /** The host path rules the instance was made with (give them to KvmInstance.open of the same instance). */
  hostPaths: HostPathPolicy;
  /**
   * Stops QEMU, opens the instance again from its runtime file (as a
   * restarted node daemon would), empties the console log and starts it;
   * `instance` and `console` then name the new ones.
   */
  restart(): Promise<void>;
  /** Stops QEMU and removes the data directory. */
  destroy(): Promise<void>;
}

/** Creates an instance in a fresh data dir, starts it and waits for its first state block. */
export async function bootGuest(options: BootOptions = {}): Promise<BootedGuest> {
  const dataDir = tempDir('node');
  fs.chmodSync(dataDir, 0o755);
  const { kernel, initrd } = guestFiles();
  const name = options.name ?? `guest-${randomUUID().slice(0, 8)}`;
  const hostPaths = testHostPaths(options.storageDir ?? dataDir, options.blockDevices);
  const instance = KvmInstance.create(
    dataDir,
    {
      name,
      memoryMiB: options.memoryMiB ?? 256,
      maxMemoryMiB: 1024,
      vcpus: 1,
      maxVcpus: 4,
      kernel,
      initrd,
      kernelArgs: `console=ttyS0 quiet loglevel=1 panic=-1 ${options.kernelArgs ?? ''}`.trim(),
      ...(options.machine ? { machine: options.machine } : {}),
    },
    { nics: options.nics, disks: options.disks, hvparams: options.hvparams },
    { unplugTimeoutMs: 20_000, hostPaths, ...options.instanceOptions },
  );
  await instance.start();
  const console = new GuestConsole(instance.paths.consoleLog);
  await console.waitFor(() => true, BOOT_TIMEOUT_MS, 'a first state block');
  const options2 = { unplugTimeoutMs: 20_000, hostPaths, ...options.instanceOptions };
  const g: BootedGuest = {
    dataDir,
    instance,
    console,
    hostPaths,
    async restart() {
      await g.instance.stop();
      const reopened = KvmInstance.open(dataDir, name, options2);
      fs.writeFileSync(reopened.paths.consoleLog, '');
      await reopened.start();
      g.instance = reopened;
      g.console = new GuestConsole(reopened.paths.consoleLog);
    },
    async destroy() {
      await g.instance.stop().catch(() => undefined);
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return g;
}

/** The rules a hypervisor-level test runs under: disks beneath its own temp dir, the cached guest kernel's directory as image dir. */
export function testHostPaths(storageDir: string, blockDevices: string[] = []): HostPathPolicy {
  return new HostPathPolicy({ storageDir, imageDir: GUEST_DIR, blockDevices });
}

/** A regular file of `bytes` bytes, sparse. */
export function makeDiskFile(dir: string, name: string, bytes: number): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, bytes);
  return file;
}

/** The fds this process has open, as a sorted list of numbers. */
export function openFds(): number[] {
  return fs
    .readdirSync('/proc/self/fd')
    .map(Number)
    .sort((a, b) => a - b);
}

export function netInterfaces(): string[] {
  return fs.readdirSync('/sys/class/net').sort();
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8' });
}

export const slotAddr = (slot: number): string => `0000:00:${slot.toString(16).padStart(2, '0')}.0`;

export const newUuid = (): string => randomUUID();
