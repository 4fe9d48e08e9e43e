/**
 * The CLI's V8 code cache (src/common/compile-cache.ts), in fresh Node
 * processes as the CLI uses it: entries are made and used, and a stale,
 * corrupt or truncated entry, or an unsafe directory, never changes what
 * runs.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const CACHE_MODULE = path.resolve(__dirname, '../../src/common/compile-cache.js');

/** Runs a fresh node that installs the cache in `dir` and prints what `mod` exports (its `value`). */
function run(dir: string, mod: string): { value: string; used: boolean } {
  const script = `const used = require(${JSON.stringify(CACHE_MODULE)}).installCompileCache(process.argv[1]);` +
    `console.log(JSON.stringify({ value: require(process.argv[2]).value, used }))`;
  const r = spawnSync(process.execPath, ['-e', script, dir, mod], { encoding: 'utf8', env: { ...process.env, GNT_COMPILE_CACHE: '' } });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { value: string; used: boolean };
}

const entries = (dir: string): string[] => fs.readdirSync(dir).filter((f) => f.endsWith('.v8c'));

/** A module of some size (many functions, so that its cache is not trivial) exporting `value`. */
function moduleText(value: string): string {
  const fns = Array.from({ length: 200 }, (_, i) => `function f${i}(x) { return x + ${i}; }`).join('\n');
  return `${fns}\nexports.value = ${JSON.stringify(value)} + f1(0);\n`;
}

describe('compile cache', () => {
  let work: string;
  let dir: string;
  let mod: string;
  beforeEach(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-v8c-'));
    dir = path.join(work, 'cache');
    mod = path.join(work, 'm.js');
    fs.writeFileSync(mod, moduleText('AAAA'));
  });
  afterEach(() => fs.rmSync(work, { recursive: true, force: true }));

  it('writes an entry at the first run (dir 0700) and runs the same code from it at the next', () => {
    assert.deepEqual(run(dir, mod), { value: 'AAAA1', used: true });
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
    const [entry] = entries(dir);
    assert.ok(entry, 'an entry was written');
    const before = fs.readFileSync(path.join(dir, entry));
    assert.deepEqual(run(dir, mod), { value: 'AAAA1', used: true });
    assert.deepEqual(fs.readFileSync(path.join(dir, entry)), before, 'an accepted entry is not rewritten');
  });

  it('ignores an entry for other source text of the same length, even with the old mtime restored', () => {
    run(dir, mod);
    const st = fs.statSync(mod);
    fs.writeFileSync(mod, moduleText('BBBB'));
    fs.utimesSync(mod, st.atime, st.mtime);
    assert.equal(fs.statSync(mod).size, st.size);
    assert.equal(run(dir, mod).value, 'BBBB1');
    assert.equal(run(dir, mod).value, 'BBBB1', 'and the rewritten entry is for the new text');
  });

  it('ignores a corrupt or truncated entry and rewrites it', () => {
    run(dir, mod);
    const file = path.join(dir, entries(dir)[0]);
    const good = fs.readFileSync(file);
    const bad = Buffer.from(good);
    bad[bad.length - 10] ^= 0xff;
    fs.writeFileSync(file, bad);
    assert.equal(run(dir, mod).value, 'AAAA1');
    const rewritten = fs.readFileSync(file);
    assert.notDeepEqual(rewritten, bad, 'rewritten from the run');
    run(dir, mod);
    assert.deepEqual(fs.readFileSync(file), rewritten, 'the rewritten entry is accepted (not written again)');
    fs.writeFileSync(file, good.subarray(0, 30));
    assert.equal(run(dir, mod).value, 'AAAA1');
    assert.ok(fs.readFileSync(file).length > 30, 'a truncated entry is rewritten');
  });

  it('is not used in a directory others may write', () => {
    fs.mkdirSync(dir, { mode: 0o777 });
    fs.chmodSync(dir, 0o777);
    assert.deepEqual(run(dir, mod), { value: 'AAAA1', used: false });
    assert.deepEqual(entries(dir), []);
  });
});
