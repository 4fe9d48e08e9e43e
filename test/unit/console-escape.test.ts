import { strict as assert } from 'node:assert';
import { connectedLine, ESCAPE_BYTE, splitAtEscape } from '../../src/master/cli/console';

describe('console escape (Ctrl-])', () => {
  it('passes input without the escape byte through unchanged', () => {
    const r = splitAtEscape(Buffer.from('echo hi\r'));
    assert.equal(r.send.toString(), 'echo hi\r');
    assert.equal(r.leave, false);
  });

  it('leaves at Ctrl-] and sends only what came before it', () => {
    const r = splitAtEscape(Buffer.from([0x6c, 0x73, ESCAPE_BYTE, 0x0d, 0x78]));
    assert.deepEqual([...r.send], [0x6c, 0x73]);
    assert.equal(r.leave, true);
  });

  it('leaves on a lone Ctrl-] and sends nothing', () => {
    const r = splitAtEscape(Buffer.from([ESCAPE_BYTE]));
    assert.equal(r.send.length, 0);
    assert.equal(r.leave, true);
  });

  it('does not take other control bytes (Ctrl-C, Ctrl-D, ESC) for the escape', () => {
    const r = splitAtEscape(Buffer.from([0x03, 0x04, 0x1b, 0x1c, 0x1e]));
    assert.equal(r.leave, false);
    assert.equal(r.send.length, 5);
  });

  it('names the escape character in the connected line', () => {
    assert.equal(connectedLine('web1'), "Connected to the console of web1; escape character is '^]'");
  });
});
