/**
 * Value rules shared by the CLI (which parses) and the master (which checks
 * every request again, since any client with a cluster certificate may call
 * it). Each failure is a UsageError with a message naming the bad value.
 */
import { checkHvparams } from '../common/hvparams';
import { normalizeMacWith } from '../common/mac';

export class UsageError extends Error {
  override name = 'UsageError';
}

const NAME_RULE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Instance and node names: 1-63 letters, digits, ".", "_", "-"; no "/", "..", spaces or shell characters. */
export function checkName(kind: 'instance' | 'node', name: string): string {
  if (!NAME_RULE.test(name) || name.includes('..'))
    throw new UsageError(
      `${kind} name "${name}" is not valid: use 1 to 63 letters, digits, ".", "_" or "-", starting with a letter or digit, without ".."`,
    );
  return name;
}

const UNITS: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/**
 * Parses a size with a unit: 512M, 1G, 64MiB, 1.5G, 100MB. Units are binary
 * (K, M, G, T, optionally followed by "iB" or "B"). A number without a unit,
 * a negative or a zero size is refused. Returns bytes.
 */
export function parseSize(text: string, what = 'size'): number {
  const s = text.trim();
  if (s.startsWith('-')) throw new UsageError(`${what} "${text}" is negative`);
  if (/^\d+(\.\d+)?$/.test(s))
    throw new UsageError(`${what} "${text}" has no unit: write e.g. ${s}M or ${s}G (K, M, G, T; binary multiples)`);
  const m = /^(\d+(?:\.\d+)?)\s*([KMGTkmgt])(iB|B|ib|b)?$/.exec(s);
  if (!m) throw new UsageError(`${what} "${text}" is not valid: write a number with a unit, e.g. 512M, 1G or 64MiB`);
  const bytes = Math.round(Number(m[1]) * UNITS[m[2].toUpperCase()]);
  if (bytes <= 0) throw new UsageError(`${what} "${text}" must be greater than zero`);
  if (!Number.isSafeInteger(bytes)) throw new UsageError(`${what} "${text}" is too large`);
  return bytes;
}

/** A size that must be a whole number of MiB (memory). Returns MiB. */
export function parseSizeMiB(text: string, what = 'memory size'): number {
  const bytes = parseSize(text, what);
  if (bytes % (1024 * 1024) !== 0) throw new UsageError(`${what} "${text}" is not a whole number of MiB`);
  return bytes / (1024 * 1024);
}

/** Formats bytes for people: 1G, 512M, 1536K. */
export function formatSize(bytes: number): string {
  for (const [unit, mult] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (bytes >= mult) return bytes % mult === 0 ? `${bytes / mult}${unit}` : `${(bytes / mult).toFixed(1)}${unit}`;
  }
  return `${bytes}B`;
}

/** A unicast, non-zero MAC, written aa:bb:cc:dd:ee:ff; returned in lower case (the rule of src/common/mac.ts, as on the node). */
export function checkMac(mac: string): string {
  return normalizeMacWith(mac, (m) => new UsageError(m));
}

/** An instance's hvparams by the schema of src/common/hvparams.ts: known keys, each value by its rule. */
export function checkHvparamValues(hv: Readonly<Record<string, string>>): Record<string, string> {
  checkHvparams(hv, (m) => new UsageError(m));
  return { ...hv };
}

/** host:port with a port from 1 to 65535. IPv6 hosts in brackets. */
export function checkAddress(address: string, what = 'address'): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65535) throw new UsageError(`${what} "${address}" is not valid: write HOST:PORT, e.g. 127.0.0.1:1811`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

/** Bridge names are Linux interface names. */
export function checkLink(link: string): string {
  if (link !== '' && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$/.test(link))
    throw new UsageError(`link "${link}" is not a valid bridge name (1 to 15 letters, digits, ".", "_" or "-")`);
  return link;
}

export function checkCount(text: string | number, what: string, min = 1, max = 255): number {
  const n = typeof text === 'number' ? text : /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${what} "${text}" must be a whole number from ${min} to ${max}`);
  return n;
}

/** An absolute path without newlines (kernel, initrd: they are node-local, checked by the node). */
export function checkNodePath(p: string, what: string): string {
  if (!p.startsWith('/') || /[\n\0]/.test(p)) throw new UsageError(`${what} "${p}" must be an absolute path`);
  return p;
}

/** Random MAC in QEMU's 52:54:00 prefix. */
export function randomMac(random: () => number = Math.random): string {
  const b = () => Math.floor(random() * 256).toString(16).padStart(2, '0');
  return `52:54:00:${b()}:${b()}:${b()}`;
}
