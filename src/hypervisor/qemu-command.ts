/**
 * Building QEMU's command line.
 *
 * The runtime file keeps only the fixed, machine-defining part (`kvm_cmd`).
 * At start the node adds its own paths (monitor, console, pid file), the
 * privilege-drop options from hvparams, and every disk and NIC at its
 * recorded PCI slot, so a restart gives the guest the same PCI layout.
 */
import { excerpt } from '../common/excerpt';
import { hvparamProblem, MACHINE_RULE } from '../common/hvparams';
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
  // What this node makes passes the same check as a command carried from elsewhere.
  assertFixedCommand(cmd, spec.name);
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
  /** The serial console's unix socket (QEMU serves one client; src/hypervisor/serial-console.ts). */
  consoleSocket: string;
  pidFile: string;
  /** The second monitor's socket (test hook), when enabled. */
  testQmpSocket?: string;
}

/**
 * A value inside a QemuOpts option string ("a=1,b=2"): QEMU reads ",," as a
 * literal comma, so doubling every comma keeps a value from adding options.
 * NUL and newline cannot be passed at all.
 */
export function qemuOptValue(value: string, what: string): string {
  if (/[\0\n]/.test(value)) throw new InvalidArgumentError(`${what} contains a NUL or newline character and cannot be given to QEMU`);
  return value.replace(/,/g, ',,');
}

/** Monitor, console and pid file: paths of the node that runs the instance (-pidfile is a plain string, not QemuOpts). */
export function nodeLocalArgs(paths: NodePaths, options: { testMonitor?: boolean } = {}): string[] {
  return [
    '-qmp', `unix:${qemuOptValue(paths.qmpSocket, 'the QMP socket path')},server=on,wait=off`,
    // A second monitor for tests and debugging (gnt-noded --test-monitor): QEMU's
    // QMP socket serves one client at a time, and the node daemon holds the first.
    ...(options.testMonitor && paths.testQmpSocket ? ['-qmp', `unix:${qemuOptValue(paths.testQmpSocket, 'the test QMP socket path')},server=on,wait=off`] : []),
    // The serial port is a unix socket server (one interactive client at a
    // time, never waited for) that also logs all guest output to console.log
    // from QEMU's start, whether or not a client is connected.
    '-chardev', `socket,id=console,path=${qemuOptValue(paths.consoleSocket, 'the console socket path')},server=on,wait=off,logfile=${qemuOptValue(paths.consoleLog, 'the console log path')}`,
    '-serial', 'chardev:console',
    '-pidfile', paths.pidFile,
  ];
}

/** The seccomp sandbox every unprivileged QEMU runs under: no spawning, no privilege or resource games. */
export const SANDBOX_ARG = 'on,obsolete=deny,spawn=deny,resourcecontrol=deny';

function securityValue(hv: HvParams, key: string): string | undefined {
  const v = hv[key];
  if (v === undefined || v === '') return undefined;
  const problem = hvparamProblem(key, v, false);
  if (problem) throw new InvalidArgumentError(problem);
  return String(v);
}

/**
 * Privilege drop from the hvparams the node recorded (src/noded/qemu-user.ts
 * chooses them): security_model=user runs QEMU as `security_domain`,
 * security_model=pool as uid:gid `security_uid`, both optionally in
 * `chroot`, under the seccomp sandbox (so with no capabilities left).
 * security_model=none, or none recorded (runtime files from before the
 * unprivileged default), runs QEMU as the node daemon's user, root.
 */
export function securityArgs(hv: HvParams, qemu: QemuFeatures): string[] {
  const model = securityValue(hv, 'security_model') ?? 'none';
  if (model === 'none') return [];
  const user = model === 'user' ? securityValue(hv, 'security_domain') : model === 'pool' ? securityValue(hv, 'security_uid') : undefined;
  if (!user) throw new InvalidArgumentError(`security_model=${model} needs ${model === 'user' ? 'security_domain (a user name)' : 'security_uid (a uid of the node\'s pool)'}`);
  // QEMU takes "uid:gid" where it takes a user name (-run-with user=, and -runas since QEMU 5.0).
  const who = model === 'pool' ? `${user}:${user}` : user;
  const chroot = securityValue(hv, 'chroot');
  const args: string[] = [];
  if (qemu.runWith) args.push('-run-with', chroot ? `user=${who},chroot=${qemuOptValue(chroot, 'hvparam chroot')}` : `user=${who}`);
  else args.push('-runas', who, ...(chroot ? ['-chroot', chroot] : []));
  if (qemu.sandbox) args.push('-sandbox', SANDBOX_ARG);
  return args;
}

/** Options the fixed command may hold (what buildFixedCommand makes), with a check of each value. */
const FIXED_OPTIONS: Record<string, ((v: string, instance: string) => boolean) | null> = {
  // -name and -machine are QemuOpts strings: their rules leave no ",".
  '-name': (v, instance) => v === instance && /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(v),
  '-machine': (v) => MACHINE_RULE.test(v),
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
    if (!Object.prototype.hasOwnProperty.call(FIXED_OPTIONS, opt))
      throw new InvalidArgumentError(`the QEMU command of ${instance} has an option this node does not accept: ${excerpt(opt)}`);
    if (seen.has(opt)) throw new InvalidArgumentError(`the QEMU command of ${instance} has ${opt} twice`);
    seen.add(opt);
    const check = FIXED_OPTIONS[opt];
    if (!check) continue;
    const value = cmd[++i];
    if (value === undefined || !check(value, instance))
      throw new InvalidArgumentError(`the QEMU command of ${instance} has a bad value for ${opt}: ${excerpt(value ?? null)}`);
  }
  for (const need of ['-name', '-m', '-smp', '-kernel'])
    if (!seen.has(need)) throw new InvalidArgumentError(`the QEMU command of ${instance} lacks ${need}`);
}
