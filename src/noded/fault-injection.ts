/**
 * Crash points for tests (test/integration/operations.test.ts): with
 * GNT_NODED_CRASH_POINT=NAME in its environment, gnt-noded SIGKILLs itself
 * when it reaches that point, to make the windows a real crash can hit
 * (between applying a change and replying, between creating a disk file and
 * attaching it, between growing a disk file and QEMU's block_resize) happen on demand. Does nothing unless the variable is set.
 */
export type CrashPoint = 'after-hotplug-applied' | 'after-disk-file-created' | 'after-disk-grown';

export function crashPoint(point: CrashPoint, log: (line: string) => void): void {
  if (process.env.GNT_NODED_CRASH_POINT !== point) return;
  log(`fault injection: GNT_NODED_CRASH_POINT=${point}, killing gnt-noded`);
  process.kill(process.pid, 'SIGKILL');
}
