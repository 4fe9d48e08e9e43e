/**
 * What the fuzz run must leave alone on the host: file trees (no file may
 * appear outside the directories the daemons own, decoy files stay as they
 * were) and taps (none beyond those a runtime file owns).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { instancePaths } from '../../src/hypervisor/instance-paths';
import { loadRuntimeFile } from '../../src/hypervisor/runtime-file';

export interface WatchedRoot {
  dir: string;
  /** Only the entries directly in `dir` (e.g. /tmp, shared with everything else on the machine). */
  topLevelOnly?: boolean;
  /** Names (top level) or absolute paths not to descend into / report. */
  ignore?: (absPath: string, name: string) => boolean;
}

/** Every path under the roots (directories included). */
export function snapshotPaths(roots: WatchedRoot[]): Set<string> {
  const out = new Set<string>();
  const walk = (root: WatchedRoot, dir: string, depth: number): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (root.ignore?.(p, e.name)) continue;
      out.add(p);
      if (e.isDirectory() && !root.topLevelOnly) walk(root, p, depth + 1);
    }
  };
  for (const r of roots) walk(r, r.dir, 0);
  return out;
}

/** Paths in `after` but not in `before` that are not inside one of the `allowed` directories. */
export function newPathsOutside(before: Set<string>, after: Set<string>, allowed: string[]): string[] {
  const inside = (p: string): boolean => allowed.some((a) => p === a || p.startsWith(`${a}${path.sep}`));
  return [...after].filter((p) => !before.has(p) && !inside(p)).sort();
}

/** sha256 of each regular file under `dir` (the decoys), by path. */
export function digestTree(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const p of snapshotPaths([{ dir }])) {
    const st = fs.lstatSync(p);
    out.set(p, st.isFile() ? createHash('sha256').update(fs.readFileSync(p)).digest('hex') : st.isDirectory() ? 'dir' : 'other');
  }
  return out;
}

export function diffDigests(before: Map<string, string>, after: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [p, d] of before) if (after.get(p) !== d) out.push(`${p} ${after.has(p) ? 'changed' : 'vanished'}`);
  for (const p of after.keys()) if (!before.has(p)) out.push(`${p} appeared`);
  return out;
}

/** The tap (tun) devices of this network namespace. */
export function taps(): string[] {
  return fs.readdirSync('/sys/class/net').filter((n) => fs.existsSync(`/sys/class/net/${n}/tun_flags`)).sort();
}

export interface RuntimeCheck {
  /** Instance name → error of loading its runtime file. */
  broken: Record<string, string>;
  /** Instance directories in the data dir without a runtime file. */
  orphanDirs: string[];
  /** Taps the runtime files name. */
  ownedTaps: string[];
  instances: string[];
}

/** Loads every runtime file of the data dir with the hypervisor's reader. */
export function checkRuntimeFiles(dataDir: string): RuntimeCheck {
  const res: RuntimeCheck = { broken: {}, orphanDirs: [], ownedTaps: [], instances: [] };
  for (const e of fs.readdirSync(dataDir, { withFileTypes: true })) {
    if (!e.isDirectory() || e.name.startsWith('.')) continue; // .audit: the node's audit trail, not an instance
    let file: string;
    try {
      file = instancePaths(dataDir, e.name).runtimeFile;
    } catch (err) {
      res.broken[e.name] = `not an instance name: ${(err as Error).message}`;
      continue;
    }
    if (!fs.existsSync(file)) {
      res.orphanDirs.push(e.name);
      continue;
    }
    try {
      const data = loadRuntimeFile(file, e.name);
      res.instances.push(e.name);
      for (const n of data.nics) if (n.tap) res.ownedTaps.push(n.tap);
    } catch (err) {
      res.broken[e.name] = (err as Error).message.slice(0, 300);
    }
  }
  return res;
}
