import { strict as assert } from 'node:assert';
import { boundedDetails, excerpt, MAX_STATUS_DETAILS, wellFormed } from '../../src/common/excerpt';

const EMOJI = '\u{1F600}';
/** True when `s` has no lone surrogate (what grpc-js can put into a status). */
const isWellFormed = (s: string): boolean => {
  try {
    encodeURIComponent(s);
    return true;
  } catch {
    return false;
  }
};

describe('excerpt and bounded status details', () => {
  it('quotes short input whole and long input cut, with its length', () => {
    assert.equal(excerpt('abc'), '"abc"');
    const long = 'x'.repeat(100_000);
    const q = excerpt(long);
    assert.ok(q.length < 80, q);
    assert.match(q, /…\(100000 chars\)$/);
  });

  it('never cuts an emoji in half, at any cut position', () => {
    for (let pad = 0; pad < 4; pad++) {
      const text = 'a'.repeat(pad) + EMOJI.repeat(40);
      assert.ok(isWellFormed(excerpt(text)), `pad ${pad}`);
      assert.ok(isWellFormed(boundedDetails(text.repeat(20), 100)), `pad ${pad}`);
    }
  });

  it('replaces lone surrogates that arrive already cut (e.g. from JSON.parse messages)', () => {
    const half = EMOJI.slice(0, 1);
    assert.ok(!isWellFormed(`x${half}y`));
    assert.equal(wellFormed(`x${half}y${EMOJI}`), `x\uFFFDy${EMOJI}`);
    assert.ok(isWellFormed(boundedDetails(`bad: ${half}`)));
    assert.ok(isWellFormed(excerpt(`${EMOJI.slice(1)}z`)));
  });

  it('bounds a status message to MAX_STATUS_DETAILS bytes of UTF-8', () => {
    const msg = `instance ${'é'.repeat(5000)} is not known`;
    const out = boundedDetails(msg);
    assert.ok(Buffer.byteLength(out) <= MAX_STATUS_DETAILS, String(Buffer.byteLength(out)));
    assert.match(out, /…\(\d+ bytes\)$/);
    assert.equal(boundedDetails('short'), 'short');
  });
});
