import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { QmpCommandError, QmpTimeoutError, QmpUnavailableError } from '../../src/hypervisor/errors';
import { QmpClient, type QmpEvent } from '../../src/hypervisor/qmp-client';
import { tempDir } from '../support/guest';

/** A real QEMU with no guest, paused (-S): enough for monitor behaviour. */
async function startBareQemu(dir: string): Promise<{ child: ChildProcess; socket: string }> {
  const socket = path.join(dir, 'qmp.sock');
  const child = spawn(
    'qemu-system-x86_64',
    ['-S', '-accel', 'tcg', '-machine', 'pc', '-nodefaults', '-display', 'none', '-qmp', `unix:${socket},server=on,wait=off`],
    { stdio: 'ignore' },
  );
  for (let i = 0; i < 200 && !fs.existsSync(socket); i++) await new Promise((r) => setTimeout(r, 25));
  return { child, socket };
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

describe('QMP client against a real QEMU', function () {
  let dir: string;
  let qemu: { child: ChildProcess; socket: string };
  let qmp: QmpClient;

  beforeEach(async () => {
    dir = tempDir('qmp');
    qemu = await startBareQemu(dir);
    qmp = await QmpClient.connect(qemu.socket, { timeoutMs: 5000, retryRefusedMs: 5000 });
  });
  afterEach(async () => {
    qmp.close();
    if (qemu.child.exitCode === null && qemu.child.signalCode === null) {
      qemu.child.kill('SIGCONT');
      qemu.child.kill('SIGKILL');
      await exited(qemu.child);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('negotiates capabilities and reads the QEMU version from the greeting', async () => {
    assert.ok((qmp.qemuVersion?.major ?? 0) >= 7);
    const status = await qmp.execute<{ status: string; running: boolean }>('query-status');
    assert.equal(status.status, 'prelaunch');
  });

  it('matches overlapping replies to their requests by id', async () => {
    const [status, version, name] = await Promise.all([
      qmp.execute<{ status: string }>('query-status'),
      qmp.execute<{ qemu: { major: number } }>('query-version'),
      qmp.execute<Record<string, unknown>>('query-name'),
    ]);
    assert.equal(status.status, 'prelaunch');
    assert.equal(version.qemu.major, qmp.qemuVersion?.major);
    assert.deepEqual(name, {});
  });

  it('turns a QEMU error into QmpCommandError naming the command', async () => {
    await assert.rejects(qmp.execute('device_del', { id: 'nope' }), (e: unknown) =>
      e instanceof QmpCommandError && e.command === 'device_del' && /Device 'nope' not found/.test(e.message),
    );
  });

  it('delivers events to listeners', async () => {
    const events: QmpEvent[] = [];
    qmp.on('event', (e: QmpEvent) => events.push(e));
    const resumed = qmp.waitForEvent((e) => e.event === 'RESUME', 5000, 'RESUME');
    await qmp.execute('cont');
    const e = await resumed.promise;
    assert.equal(e.event, 'RESUME');
    assert.ok(events.some((x) => x.event === 'RESUME'));
  });

  it('times out a command QEMU does not answer, and keeps working afterwards', async () => {
    qemu.child.kill('SIGSTOP');
    await assert.rejects(qmp.execute('query-status', undefined, { timeoutMs: 300 }), (e: unknown) =>
      e instanceof QmpTimeoutError && /query-status on .*qmp\.sock got no answer within 300 ms/.test(e.message),
    );
    qemu.child.kill('SIGCONT');
    const status = await qmp.execute<{ status: string }>('query-status');
    assert.equal(status.status, 'prelaunch', 'the late answer to the timed-out call was not mistaken for this one');
  });

  it('rejects every pending call and event wait when QEMU dies, and later calls at once', async () => {
    qemu.child.kill('SIGSTOP');
    const pending = [qmp.execute('query-status'), qmp.execute('query-version')];
    const wait = qmp.waitForEvent(() => false, 60_000, 'nothing');
    const all = Promise.allSettled([...pending, wait.promise]);
    qemu.child.kill('SIGKILL');
    await exited(qemu.child);
    const settled = await all;
    for (const r of settled) assert.ok(r.status === 'rejected' && r.reason instanceof QmpUnavailableError, JSON.stringify(r));
    const started = Date.now();
    await assert.rejects(qmp.execute('query-status'), /went away/);
    assert.ok(Date.now() - started < 1000);
  });

  it('passes a file descriptor with getfd (SCM_RIGHTS) that QEMU can then close by name', async () => {
    const fd = fs.openSync(path.join(dir, 'some-file'), 'w');
    try {
      await qmp.execute('getfd', { fdname: 'passed' }, { fds: [fd] });
    } finally {
      fs.closeSync(fd);
    }
    await qmp.execute('closefd', { fdname: 'passed' });
    await assert.rejects(qmp.execute('closefd', { fdname: 'passed' }), /not found/);
  });

  it('passes a file descriptor with add-fd into an fdset with an opaque tag', async () => {
    const fd = fs.openSync(path.join(dir, 'disk.img'), 'w+');
    let set: number;
    try {
      set = (await qmp.execute<{ 'fdset-id': number }>('add-fd', { opaque: 'disk-x' }, { fds: [fd] }))['fdset-id'];
    } finally {
      fs.closeSync(fd);
    }
    const sets = await qmp.execute<Array<{ 'fdset-id': number; fds: Array<{ opaque?: string }> }>>('query-fdsets');
    assert.deepEqual(sets.find((s) => s['fdset-id'] === set)?.fds.map((f) => f.opaque), ['disk-x']);
  });

  it('pipelined commands with fds: each fd lands with its own command, in order, and a refusal in the middle does not stop the ones after it', async () => {
    // Sent in one go, no answer awaited in between (what hotplug-transaction.ts pipeline does).
    const files = ['a', 'b', 'c'].map((n) => path.join(dir, `${n}.img`));
    const fds = files.map((f) => fs.openSync(f, 'w+'));
    let answers: PromiseSettledResult<unknown>[];
    try {
      answers = await Promise.allSettled([
        qmp.execute('add-fd', { opaque: 'a' }, { fds: [fds[0]] }),
        qmp.execute('getfd', { fdname: 'b' }, { fds: [fds[1]] }),
        qmp.execute('closefd', { fdname: 'no-such-name' }),
        qmp.execute('add-fd', { opaque: 'c' }, { fds: [fds[2]] }),
        qmp.execute('query-fdsets'),
      ]);
    } finally {
      fds.forEach((fd) => fs.closeSync(fd));
    }
    assert.deepEqual(answers.map((a) => a.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    const value = <T>(i: number): T => (answers[i] as PromiseFulfilledResult<T>).value;
    const pid = qemu.child.pid as number;
    const target = (qemuFd: number): string => fs.readlinkSync(`/proc/${pid}/fd/${qemuFd}`);
    assert.equal(target(value<{ fd: number }>(0).fd), files[0], 'add-fd a holds file a');
    assert.equal(target(value<{ fd: number }>(3).fd), files[2], 'add-fd c holds file c');
    const sets = value<Array<{ 'fdset-id': number; fds: Array<{ opaque?: string }> }>>(4);
    assert.deepEqual(sets.map((s) => s.fds.map((f) => f.opaque)).flat().sort(), ['a', 'c'], 'query-fdsets, sent last, saw both');
    // The named fd b is QEMU's until closed: it must be b's file (closefd of it succeeds once).
    const open = fs.readdirSync(`/proc/${pid}/fd`).map((n) => { try { return fs.readlinkSync(`/proc/${pid}/fd/${n}`); } catch { return ''; } });
    assert.ok(open.includes(files[1]), 'getfd b holds file b');
    await qmp.execute('closefd', { fdname: 'b' });
  });

  it('does not block the process when the monitor backlog is full', async () => {
    // QEMU serves one client; later ones queue in the kernel backlog until it is full.
    const queued: QmpClient[] = [];
    const attempts = Array.from({ length: 4 }, () =>
      QmpClient.connect(qemu.socket, { timeoutMs: 400 }).then((c) => (queued.push(c), c)),
    );
    let ticks = 0;
    const timer = setInterval(() => ticks++, 20);
    const results = await Promise.allSettled(attempts);
    clearInterval(timer);
    for (const c of queued) c.close();
    assert.ok(ticks >= 10, `the event loop kept running (${ticks} ticks)`);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.match(String((r as PromiseRejectedResult).reason.message), /busy: another client holds it|is another client holding the monitor/);
    }
    assert.equal((await qmp.execute<{ status: string }>('query-status')).status, 'prelaunch', 'the first client still works');
  });

  it('names the socket and the cause when nothing listens', async () => {
    await assert.rejects(QmpClient.connect(path.join(dir, 'absent.sock')), (e: unknown) =>
      e instanceof QmpUnavailableError && /absent\.sock: .*No such file or directory \(is the instance running\?\)/.test(e.message),
    );
  });
});
