/**
 * The instance's QEMU pid (qemu-process.ts QemuPid): verified in full once,
 * then checked by its start time; a process that died or that is not the
 * instance's QEMU is never taken. Real processes stand in for QEMU: what is
 * checked is the pid file, /proc/PID/stat and the command line naming the
 * instance's monitor socket.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { instancePaths, type InstancePaths } from '../../src/hypervisor/instance-paths';
import { QemuPid, runningPid, statStartTime } from '../../src/hypervisor/qemu-process';

describe('QEMU pid', () => {
  let dir: string;
  let paths: InstancePaths;
  const children: ChildProcess[] = [];

  /** A process whose command line names `socket`, as QEMU's names its monitor socket. */
  function fakeQemu(socket: string): Promise<ChildProcess> {
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', socket], { stdio: 'ignore' });
    children.push(child);
    return new Promise((resolve, reject) => {
      child.once('spawn', () => resolve(child));
      child.once('error', reject);
    });
  }
  const writePid = (child: ChildProcess): void => fs.writeFileSync(paths.pidFile, `${child.pid}\n`);
  const kill = (child: ChildProcess): Promise<void> =>
    new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL'); // a process this test started, by its pid
    });

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-pid-'));
    paths = instancePaths(dir, 'web-1');
    fs.mkdirSync(paths.dir);
  });
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) await kill(c);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('is the pid of the process the pid file names while it lives, and undefined once it died', async () => {
    const q = new QemuPid(paths);
    assert.equal(q.get(), undefined, 'no pid file');
    const a = await fakeQemu(paths.qmpSocket);
    writePid(a);
    assert.equal(q.get(), a.pid);
    assert.equal(q.get(), a.pid, 'the remembered pid, still the same process');
    await kill(a);
    assert.equal(q.get(), undefined);
    assert.equal(runningPid(paths), undefined);
  });

  it('a QEMU replaced by another one (a new pid in the pid file) is found anew', async () => {
    const q = new QemuPid(paths);
    const a = await fakeQemu(paths.qmpSocket);
    writePid(a);
    assert.equal(q.get(), a.pid);
    await kill(a);
    const b = await fakeQemu(paths.qmpSocket);
    writePid(b);
    assert.equal(q.get(), b.pid);
  });

  it('never takes a process that is not this instance\'s QEMU', async () => {
    const q = new QemuPid(paths);
    const other = await fakeQemu(path.join(dir, 'other', 'qmp.sock'));
    writePid(other);
    assert.equal(q.get(), undefined);
    fs.writeFileSync(paths.pidFile, 'garbage');
    assert.equal(q.get(), undefined);
    fs.writeFileSync(paths.pidFile, '1');
    assert.equal(q.get(), undefined);
  });

  it('forget() makes the next call verify in full', async () => {
    const q = new QemuPid(paths);
    const a = await fakeQemu(paths.qmpSocket);
    writePid(a);
    assert.equal(q.get(), a.pid);
    q.forget();
    fs.rmSync(paths.pidFile);
    assert.equal(q.get(), undefined, 'without the pid file the full check finds nothing');
  });

  it('reads the start time after the last ")" of the command name, and none for a zombie', () => {
    const tail = (state: string): string => `${state} 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 99 100`;
    assert.equal(statStartTime(`77 (qemu) ${tail('S')}`), '4242');
    assert.equal(statStartTime(`77 (a) Z b) c) ${tail('R')}`), '4242');
    assert.equal(statStartTime(`77 (qemu) ${tail('Z')}`), undefined);
    assert.equal(statStartTime(`77 (qemu) ${tail('X')}`), undefined);
    assert.equal(statStartTime('77 (qemu) S 1 2'), undefined);
    assert.equal(statStartTime(''), undefined);
  });
});
