/**
 * Building QEMU's command line.
 *
 * The runtime file keeps only the fixed, machine-defining part (`kvm_cmd`).
 * At start the node adds its own paths (monitor, console, pid file), the
 * privilege-drop options from hvparams, and every disk and NIC at its
 * recorded PCI slot, so a restart gives the guest the same PCI layout.
 */
import { InvalidArgumentError } from './errors';
import type { QemuFeatures } from './qemu-binary';
import type { HvParams } from './runtime-file';

export interface InstanceSpec {
  name: string;
  uuid?: string;
  /** Boot memory in MiB. */
  memoryMiB: number;
  /** Room for memory hotplug in MiB (0 or equal to memory: none). */
  maxMemoryMiB?: number;
  memorySlots?: number;
  vcpus: number;
  maxVcpus?: number;
  kernel: string;
  initrd?: string;
  kernelArgs?: string;
  machine?: string;
  accel?: string;
}

const positiveInt = (v: number, what: string): number => {
  if (!Number.isInteger(v) || v < 1) throw new InvalidArgumentError(`${what} must be a positive integer, not ${v}`);
  return v;
};

/** The fixed part of the command: what the guest sees as its machine. */
export function buildFixedCommand(spec: InstanceSpec): string[] {
  const memory = positiveInt(spec.memoryMiB, 'memory (MiB)');
  const vcpus = positiveInt(spec.vcpus, 'vcpus');
  const maxVcpus = positiveInt(spec.maxVcpus ?? vcpus, 'maxvcpus');
  if (maxVcpus < vcpus) throw new InvalidArgumentError(`maxvcpus ${maxVcpus} is below vcpus ${vcpus}`);
  const maxMem = spec.maxMemoryMiB || memory; // 0 or unset: no memory hotplug
  if (maxMem < memory) throw new InvalidArgumentError(`maxmem ${maxMem} MiB is below memory ${memory} MiB`);
  const mem = memoryOption(memory, maxMem, spec.memorySlots);
  const cmd = [
    '-name', spec.name,
    '-machine', spec.machine ?? 'pc',
    '-accel', spec.accel ?? 'tcg',
    '-m', mem,
    '-smp', `${vcpus},maxcpus=${maxVcpus}`,
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-kernel', spec.kernel,
  ];
  if (spec.uuid) cmd.push('-uuid', spec.uuid);
  if (spec.initrd) cmd.push('-initrd', spec.initrd);
  if (spec.kernelArgs) cmd.push('-append', spec.kernelArgs);
  return cmd;
}

/** A copy of `cmd` with the value after `option` replaced (the option must be there). */
export function withOption(cmd: readonly string[], option: string, value: string): string[] {
  const i = cmd.indexOf(option);
  if (i < 0 || i + 1 >= cmd.length) throw new InvalidArgumentError(`the fixed command has no ${option} option to change`);
  const out = [...cmd];
  out[i + 1] = value;
  return out;
}

export function memoryOption(memoryMiB: number, maxMemoryMiB: number, slots = 4): string {
  return maxMemoryMiB > memoryMiB ? `${memoryMiB}M,slots=${slots},maxmem=${maxMemoryMiB}M` : `${memoryMiB}M`;
}

export interface NodePaths {
  qmpSocket: string;
  consoleLog: string;
  pidFile: string;
  /** The second monitor's socket (test hook), when enabled. */
  testQmpSocket?: string;
}

/** Monitor, console and pid file: paths of the node that runs the instance. */
export function nodeLocalArgs(paths: NodePaths, options: { testMonitor?: boolean } = {}): string[] {
  return [
    '-qmp', `unix:${paths.qmpSocket},server=on,wait=off`,
    // A second monitor for tests and debugging (gnt-noded --test-monitor): QEMU's
    // QMP socket serves one client at a time, and the node daemon holds the first.
    ...(options.testMonitor && paths.testQmpSocket ? ['-qmp', `unix:${paths.testQmpSocket},server=on,wait=off`] : []),
    '-chardev', `file,id=console,path=${paths.consoleLog}`,
    '-serial', 'chardev:console',
    '-pidfile', paths.pidFile,
  ];
}

/**
 * hvparams security_model=user runs QEMU as `security_domain` (optionally in
 * `chroot`) with a seccomp sandbox that forbids spawning and privilege games.
 */
export function securityArgs(hv: HvParams, qemu: QemuFeatures): string[] {
  if ((hv.security_model ?? 'none') === 'none') return [];
  if (hv.security_model !== 'user') throw new InvalidArgumentError(`unknown security_model "${String(hv.security_model)}"`);
  const user = hv.security_domain;
  if (typeof user !== 'string' || !user) throw new InvalidArgumentError('security_model=user needs security_domain (a user name)');
  const chroot = typeof hv.chroot === 'string' && hv.chroot ? hv.chroot : undefined;
  const args: string[] = [];
  if (qemu.runWith) args.push('-run-with', chroot ? `user=${user},chroot=${chroot}` : `user=${user}`);
  else args.push('-runas', user, ...(chroot ? ['-chroot', chroot] : []));
  if (qemu.sandbox) args.push('-sandbox', 'on,obsolete=deny,spawn=deny,resourcecontrol=deny');
  return args;
}

/** Options the fixed command may hold (what buildFixedCommand makes), with a check of each value. */
const FIXED_OPTIONS: Record<string, ((v: string, instance: string) => boolean) | null> = {
  '-name': (v, instance) => v === instance,
  '-machine': (v) => /^[a-z][a-z0-9._-]{0,63}$/.test(v),
  '-accel': (v) => v === 'tcg' || v === 'kvm',
  '-m': (v) => /^\d+M(,slots=\d+,maxmem=\d+M)?$/.test(v),
  '-smp': (v) => /^\d+,maxcpus=\d+$/.test(v),
  '-nodefaults': null,
  '-no-user-config': null,
  '-display': (v) => v === 'none',
  '-kernel': (v) => v.startsWith('/') && !v.includes('\0'),
  '-uuid': (v) => /^[0-9a-fA-F-]{1,64}$/.test(v),
  '-initrd': (v) => v.startsWith('/') && !v.includes('\0'),
  '-append': (v) => !/[\n\0]/.test(v),
};

/**
 * Checks that a fixed command from elsewhere (a runtime file carried from
 * another node) is one this software makes: only the options above, each at
 * most once, with sane values. A node never starts QEMU with arbitrary
 * options it was sent: they could open host files or sockets.
 */
export function assertFixedCommand(cmd: readonly string[], instance: string): void {
  const seen = new Set<string>();
  for (let i = 0; i < cmd.length; i++) {
    const opt = cmd[i];
    if (!(opt in FIXED_OPTIONS)) throw new InvalidArgumentError(`the QEMU command of ${instance} has an option this node does not accept: "${opt}"`);
    if (seen.has(opt)) throw new InvalidArgumentError(`the QEMU command of ${instance} has ${opt} twice`);
    seen.add(opt);
    const check = FIXED_OPTIONS[opt];
    if (!check) continue;
    const value = cmd[++i];
    if (value === undefined || !check(value, instance))
      throw new InvalidArgumentError(`the QEMU command of ${instance} has a bad value for ${opt}: ${JSON.stringify(value ?? null)}`);
  }
  for (const need of ['-name', '-m', '-smp', '-kernel'])
    if (!seen.has(need)) throw new InvalidArgumentError(`the QEMU command of ${instance} lacks ${need}`);
}
