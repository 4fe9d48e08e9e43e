/**
 * The serial console against the real test guest under QEMU 10: the chardev
 * is a unix socket server that also logs to console.log (qemu-command.ts),
 * and src/hypervisor/serial-console.ts attaches to it or tails the log.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { bootGuest, openFds, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';
import { ConsoleInUseError, openSerialConsole, tailConsoleLog, type SerialConsoleSession } from '../../src/hypervisor/serial-console';

/** Collected output of a session or tail, with a wait for some text. */
class Collected {
  text = '';
  add = (d: Buffer): void => {
    this.text += d.toString('latin1');
  };
  async waitFor(needle: string, what: string): Promise<void> {
    const deadline = Date.now() + SEEN_TIMEOUT_MS;
    while (!this.text.includes(needle)) {
      if (Date.now() > deadline) throw new Error(`never saw ${what} (${JSON.stringify(needle)}); got ${JSON.stringify(this.text.slice(-400))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

const count = (hay: string, needle: string): number => hay.split(needle).length - 1;

describe('serial console (hypervisor layer, real QEMU and guest)', function () {
  let g: BootedGuest;
  before(async () => {
    g = await bootGuest({ kernelArgs: 'gnt.shell=1' });
  });
  after(async () => g?.destroy());

  it('logs the boot output to console.log with no client connected, and the socket is root-only', () => {
    const log = fs.readFileSync(g.instance.paths.consoleLog, 'latin1');
    assert.ok(log.length > 0, 'console.log is empty');
    const st = fs.statSync(g.instance.paths.consoleSocket);
    assert.ok(st.isSocket(), 'console.sock is not a socket');
    assert.equal(st.uid, 0);
  });

  it('a later client gets the live stream, its input reaches the guest, a second session is refused', async () => {
    const fdsBefore = openFds().length;
    const out = new Collected();
    let ended = '';
    const s: SerialConsoleSession = await openSerialConsole(g.instance.name, g.instance.paths.consoleSocket, { onData: out.add, onEnd: (r) => (ended = r) });
    await assert.rejects(openSerialConsole(g.instance.name, g.instance.paths.consoleSocket, { onData: () => undefined, onEnd: () => undefined }), (e: unknown) => {
      assert.ok(e instanceof ConsoleInUseError);
      assert.match((e as Error).message, new RegExp(`the console of ${g.instance.name} is in use by another session`));
      return true;
    });
    s.write(Buffer.from('\recho gnt-console-$((6*7))\r'));
    await out.waitFor('gnt-console-42', 'the guest shell answer');
    s.close();
    assert.equal(ended, 'the session was closed');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(openFds().length, fdsBefore, 'fds leaked by the session');
    // The log has the answer exactly once (not duplicated by the client), and still the boot output before it.
    const log = fs.readFileSync(g.instance.paths.consoleLog, 'latin1');
    assert.equal(count(log, 'gnt-console-42'), 1, 'the answer is not in console.log exactly once');
    // A new session attaches after the first left.
    const out2 = new Collected();
    const s2 = await openSerialConsole(g.instance.name, g.instance.paths.consoleSocket, { onData: out2.add, onEnd: () => undefined });
    s2.write(Buffer.from('echo gnt-again-$((2*3))\r'));
    await out2.waitFor('gnt-again-6', 'the second session answer');
    s2.close();
  });

  it('--tail replays recent output and follows new output without attaching', async () => {
    const tail = new Collected();
    const t = tailConsoleLog(g.instance.paths.consoleLog, 16 * 1024, tail.add);
    try {
      await tail.waitFor('gnt-again-6', 'the replayed output');
      const s = await openSerialConsole(g.instance.name, g.instance.paths.consoleSocket, { onData: () => undefined, onEnd: () => undefined });
      s.write(Buffer.from('echo gnt-tail-$((5*5))\r'));
      await tail.waitFor('gnt-tail-25', 'followed output');
      s.close();
    } finally {
      t.stop();
    }
  });

  it('an instance that stops ends the session with the reason', async () => {
    let ended = '';
    const s = await openSerialConsole(g.instance.name, g.instance.paths.consoleSocket, { onData: () => undefined, onEnd: (r) => (ended = r) });
    await g.instance.stop();
    const deadline = Date.now() + SEEN_TIMEOUT_MS;
    while (!ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.match(ended, /stopped/);
    s.close();
  });
});

describe('serial console with an unprivileged QEMU (security_model=user)', function () {
  let g: BootedGuest;
  before(async () => {
    g = await bootGuest({ kernelArgs: 'gnt.shell=1', hvparams: { security_model: 'user', security_domain: 'gnt-qemu' } });
  });
  after(async () => g?.destroy());

  it('the console socket is still root-owned and QEMU (not root) cannot be reached through it by others', async () => {
    const st = fs.statSync(g.instance.paths.consoleSocket);
    assert.equal(st.uid, 0, 'console.sock is not owned by root');
    const dir = fs.statSync(g.instance.paths.dir);
    assert.equal(dir.mode & 0o077 & ~0o055, 0, 'the instance dir is writable by others');
    const out = new Collected();
    const s = await openSerialConsole(g.instance.name, g.instance.paths.consoleSocket, { onData: out.add, onEnd: () => undefined });
    s.write(Buffer.from('\recho gnt-unpriv-$((3*3))\r'));
    await out.waitFor('gnt-unpriv-9', 'the guest shell answer');
    s.close();
  });
});
