/**
 * The last safety net of the cleanup: every QEMU this run started has its pid
 * file under the run's work directory; any of them still alive at the end
 * (a daemon that died before it could stop its guests) is killed by that pid.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

function pidFiles(dir: string, depth = 3): string[] {
  if (depth < 0 || !fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return pidFiles(p, depth - 1);
    return e.name === 'qemu.pid' ? [p] : [];
  });
}

/** Is `pid` a QEMU whose command line names our work directory? */
function isOurQemu(pid: number, work: string): boolean {
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmd.includes('qemu-system') && cmd.includes(work);
  } catch {
    return false;
  }
}

export function reapQemus(work: string): number[] {
  const killed: number[] = [];
  for (const f of pidFiles(work)) {
    const pid = Number(fs.readFileSync(f, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1 || !isOurQemu(pid, work)) continue;
    process.kill(pid, 'SIGKILL');
    killed.push(pid);
  }
  return killed;
}
