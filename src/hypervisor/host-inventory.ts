/**
 * What the host has, for verify: our taps and their bridges
 * (/sys/class/net), the processes that hold taps open and a process's open
 * fds (/proc), and the disk files of the storage directory. Everything here
 * reads the host at the moment it is called; what is gone meanwhile counts
 * as absent.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readTapRate } from './tap-rate';

/** Host taps this software names (tap.ts: gnttap%d). */
export const TAP_NAME = /^gnttap\d+$/;

export interface HostTap {
  name: string;
  /** The bridge it is enslaved to, if any. */
  master?: string;
  /** Its tbf limit in Mbit/s (0: none); absent when tc could not tell. */
  rateMbit?: number;
}

/** read(), or fallback when it throws (a file or process gone meanwhile, a link that is not there). */
function orElse<T>(read: () => T, fallback: T): T {
  try {
    return read();
  } catch {
    return fallback;
  }
}

/** The bridge a network device is enslaved to, undefined when it is on none. */
function masterOf(sysClassNet: string, name: string): string | undefined {
  return orElse(() => path.basename(fs.readlinkSync(path.join(sysClassNet, name, 'master'))), undefined);
}

/** Every gnttapN of this network namespace with its bridge. */
export function readHostTaps(sysClassNet = '/sys/class/net'): HostTap[] {
  return fs
    .readdirSync(sysClassNet)
    .filter((name) => TAP_NAME.test(name))
    .map((name) => {
      const master = masterOf(sysClassNet, name);
      const tap: HostTap = master === undefined ? { name } : { name, master };
      const rate = orElse((): number | undefined => readTapRate(name), undefined);
      if (rate !== undefined) tap.rateMbit = rate;
      return tap;
    })
    .sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
}

/** The tap name in a /proc/PID/fdinfo/N text of a tun fd ("iff:\tgnttap0"), if any. */
export function tapOfFdinfo(text: string): string | undefined {
  return /^iff:\s*(\S+)\s*$/m.exec(text)?.[1];
}

/** The open fds of a process by number ("0", "1", ...); empty when the process is gone. */
const fdsOf = (pid: number): string[] => orElse(() => fs.readdirSync(`/proc/${pid}/fd`), []);

/** The tap a process's fd is open on, undefined for anything but a tun fd. */
function tapOfFd(pid: number, fd: string): string | undefined {
  return orElse(() => {
    if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) !== '/dev/net/tun') return undefined;
    return tapOfFdinfo(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
  }, undefined); // closed meanwhile
}

/** The tun fds a process holds: fd -> tap name. Empty when the process is gone. */
export function tunFdsOf(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const fd of fdsOf(pid)) {
    const tap = tapOfFd(pid, fd);
    if (tap) out.set(Number(fd), tap);
  }
  return out;
}

/** Open fds of a process; -1 when it cannot be read. */
export function fdCount(pid: number): number {
  return orElse(() => fs.readdirSync(`/proc/${pid}/fd`).length, -1);
}

/** The network namespace of a process ("net:[4026531840]"), undefined when it cannot be read. */
const netnsOf = (pid: number | 'self'): string | undefined => orElse(() => fs.readlinkSync(`/proc/${pid}/ns/net`), undefined);

/** The pids of the processes in this network namespace. */
function pidsOfOurNetns(): number[] {
  const ours = netnsOf('self');
  return fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map(Number)
    .filter((pid) => netnsOf(pid) === ours);
}

/**
 * Which processes of this network namespace hold each tap open (scans
 * /proc/*\/fd for tun fds). Tap names are per namespace: a process of
 * another namespace holding a tap of the same name is not counted.
 */
export function tapHolders(): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const pid of pidsOfOurNetns()) {
    for (const tap of tunFdsOf(pid).values()) {
      const list = out.get(tap) ?? [];
      if (!list.includes(pid)) list.push(pid);
      out.set(tap, list);
    }
  }
  return out;
}

const isRegularFile = (f: string): boolean => orElse(() => fs.lstatSync(f).isFile(), false); // gone meanwhile

/** The node's own disk files in one instance directory of the storage directory: `<uuid>.img`. */
export function storageCandidates(dir: string, isOwnName: (file: string) => boolean): string[] {
  return orElse(() => fs.readdirSync(dir), [])
    .map((n) => path.join(dir, n))
    .filter((f) => isOwnName(path.basename(f)) && isRegularFile(f))
    .sort();
}
