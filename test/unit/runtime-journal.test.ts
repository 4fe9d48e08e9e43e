/**
 * The runtime file's journal (runtime-journal.ts, runtime-store.ts): one
 * record per save, compaction, and what loads after a writer was killed
 * (SIGKILL, in a child process) at each point of a save.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RuntimeFileError } from '../../src/hypervisor/errors';
import { RuntimeStore, loadRuntimeFile, removeInstanceDir, saveRuntimeFile, serializeRuntime, type RuntimeData } from '../../src/hypervisor/runtime-file';
import { JOURNAL_BYTES, JOURNAL_MAX_RECORDS, encodeRecord, journalPathOf, readJournal, recordAt, scanJournal } from '../../src/hypervisor/runtime-journal';

const NAME = 'web-1';

/** Runtime data that differs by `n` (the NIC's MAC and slot). */
function state(n: number): RuntimeData {
  const hex = (n % 256).toString(16).padStart(2, '0');
  return {
    version: 2,
    instance: NAME,
    kvm_cmd: ['-m', '512'],
    nics: [{ uuid: `nic-${n}`, mac: `52:54:00:00:00:${hex}`, pci: 4 + (n % 20) }],
    hvparams: { acpi: true },
    block_devices: [],
  };
}

const markOf = (file: string): { base: string; seq: number } => (JSON.parse(fs.readFileSync(file, 'utf8')) as { journal_mark: { base: string; seq: number } }).journal_mark;

/** Runs `body` in a child process (with `rs`, the built runtime-store module, and `state(n)`), which must die by SIGKILL. */
function killedChild(file: string, body: string): void {
  const modulePath = path.resolve(__dirname, '../../src/hypervisor/runtime-store.js');
  assert.ok(fs.existsSync(modulePath), `${modulePath} is built`);
  const script = `
    const rs = require(${JSON.stringify(modulePath)});
    const state = ${state.toString()};
    const NAME = ${JSON.stringify(NAME)};
    const file = process.env.GNT_TEST_FILE;
    const die = () => process.kill(process.pid, 'SIGKILL');
    ${body}
    process.stdout.write('survived\\n');
  `;
  const child = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, GNT_TEST_FILE: file }, encoding: 'utf8', timeout: 20000 });
  assert.equal(child.error, undefined);
  assert.equal(child.signal, 'SIGKILL', `child stdout: ${child.stdout} stderr: ${child.stderr}`);
  assert.equal(child.stdout, '');
}

describe('runtime journal', () => {
  let dir: string;
  let file: string;
  let journal: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-journal-'));
    file = path.join(dir, 'runtime.json');
    journal = journalPathOf(file);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('lives beside the runtime file', () => {
    assert.equal(journal, path.join(dir, 'runtime.journal'));
  });

  describe('records', () => {
    const base = Buffer.alloc(16, 7);
    it('decode what they encode and refuse a flipped byte anywhere', () => {
      const rec = encodeRecord(base, 42, Buffer.from('{"a":1}'));
      const back = recordAt(rec, 0);
      assert.equal(back?.seq, 42);
      assert.equal(back?.payload.toString(), '{"a":1}');
      assert.equal(back?.end, rec.length);
      for (let i = 0; i < rec.length; i++) {
        const bad = Buffer.from(rec);
        bad[i] ^= 0x01;
        assert.equal(recordAt(bad, 0), undefined, `byte ${i} flipped`);
      }
      assert.equal(recordAt(rec.subarray(0, rec.length - 1), 0), undefined, 'a record cut short');
    });

    it('a run is the prefix of records with the base and increasing seq', () => {
      const other = Buffer.alloc(16, 9);
      const r = (b: Buffer, seq: number): Buffer => encodeRecord(b, seq, Buffer.from(`{"s":${seq}}`));
      assert.equal(scanJournal(Buffer.concat([r(base, 3), r(base, 4), r(base, 6)]), base).latest?.seq, 6);
      assert.equal(scanJournal(Buffer.concat([r(base, 3), r(base, 4), r(other, 9)]), base).latest?.seq, 4);
      assert.equal(scanJournal(Buffer.concat([r(base, 3), r(base, 3)]), base).count, 1, 'a repeated seq ends the run');
      assert.equal(scanJournal(Buffer.concat([r(other, 5), r(base, 6)]), base).count, 0, 'records of another base first: none of ours');
      const scan = scanJournal(Buffer.concat([r(base, 1), Buffer.from('torn'), r(base, 2)]), base);
      assert.deepEqual([scan.count, scan.latest?.seq, scan.end], [1, 1, r(base, 1).length]);
    });
  });

  describe('saves', () => {
    it('the first is a compaction, the next ones journal records that load, and the runtime file stays as it was', () => {
      const { store } = storeWith(state(0));
      const runtimeText = fs.readFileSync(file, 'utf8');
      assert.equal(fs.statSync(journal).size, JOURNAL_BYTES, 'the journal is preallocated');
      for (let i = 1; i <= 5; i++) {
        store.save(state(i));
        assert.deepEqual(loadRuntimeFile(file, NAME), state(i));
      }
      assert.equal(fs.readFileSync(file, 'utf8'), runtimeText);
      const run = scanJournal(readJournal(journal), Buffer.from(markOf(file).base, 'hex'));
      assert.equal(run.count, 5);
      assert.equal(run.latest?.seq, markOf(file).seq + 5);
      assert.equal(fs.statSync(journal).size, JOURNAL_BYTES, 'appends stay inside the preallocated file');
    });

    it('a store opened on the files continues where they are', () => {
      storeWith(state(0)).store.save(state(1));
      const { store, data } = RuntimeStore.open(file, NAME);
      assert.deepEqual(data, state(1));
      store.save(state(2));
      store.save(state(3));
      assert.deepEqual(loadRuntimeFile(file, NAME), state(3));
      assert.equal(scanJournal(readJournal(journal), Buffer.from(markOf(file).base, 'hex')).count, 3);
    });

    it(`compacts after ${JOURNAL_MAX_RECORDS} records: the runtime file holds the state with a new base, the old records no longer count`, () => {
      const { store } = storeWith(state(0));
      const first = markOf(file);
      for (let i = 1; i <= JOURNAL_MAX_RECORDS; i++) store.save(state(i));
      assert.deepEqual(markOf(file), first, 'no compaction yet');
      store.save(state(1000));
      const second = markOf(file);
      assert.notEqual(second.base, first.base);
      assert.equal(second.seq, first.seq + JOURNAL_MAX_RECORDS + 1);
      assert.deepEqual(loadRuntimeFile(file, NAME), state(1000));
      store.save(state(1001));
      assert.deepEqual(loadRuntimeFile(file, NAME), state(1001));
      assert.deepEqual(markOf(file), second);
    });

    it('compacts when a record does not fit in the journal any more', () => {
      const { store } = storeWith(state(0));
      const big = (n: number): RuntimeData => ({ ...state(n), hvparams: { pad: 'x'.repeat(JOURNAL_BYTES / 3) } });
      const first = markOf(file);
      store.save(big(1));
      store.save(big(2));
      assert.deepEqual(markOf(file), first);
      store.save(big(3)); // the third does not fit
      assert.notEqual(markOf(file).base, first.base);
      assert.deepEqual(loadRuntimeFile(file, NAME), big(3));
    });

    it('a runtime file without a mark (an older node, Ganeti) ignores any journal and gets one at the first save', () => {
      storeWith(state(0)).store.save(state(1)); // a journal with a record
      fs.writeFileSync(file, serializeRuntime(state(7))); // no mark
      assert.deepEqual(loadRuntimeFile(file, NAME), state(7));
      const { store, data } = RuntimeStore.open(file, NAME);
      assert.deepEqual(data, state(7));
      store.save(state(8));
      assert.ok(markOf(file).base);
      assert.deepEqual(loadRuntimeFile(file, NAME), state(8));
    });

    it('a malformed mark is refused with what it should be', () => {
      fs.writeFileSync(file, JSON.stringify({ ...state(0), journal_mark: { base: 'zz', seq: 1 } }));
      assert.throws(() => loadRuntimeFile(file, NAME), (e: unknown) => e instanceof RuntimeFileError && /"journal_mark" is not a valid journal mark/.test(e.message));
    });

    it('another writer (saveRuntimeFile, or a second store) is noticed: the next save is a compaction of what this store holds', () => {
      const a = storeWith(state(0)).store;
      const b = RuntimeStore.open(file, NAME).store;
      a.save(state(1));
      b.save(state(2)); // appended where a's next record would go
      assert.deepEqual(loadRuntimeFile(file, NAME), state(2));
      a.save(state(3));
      assert.deepEqual(loadRuntimeFile(file, NAME), state(3));
      saveRuntimeFile(file, state(4)); // a whole new file
      assert.deepEqual(loadRuntimeFile(file, NAME), state(4));
      a.save(state(5));
      assert.deepEqual(loadRuntimeFile(file, NAME), state(5));
      b.save(state(6));
      assert.deepEqual(loadRuntimeFile(file, NAME), state(6));
    });

    it('a failed append is a RuntimeFileError, reads back as the state before it, and the next save compacts', () => {
      const { store } = storeWith(state(0));
      store.save(state(1));
      const mark = markOf(file);
      assert.throws(
        () => store.save(state(2), { appendBytes: () => { throw new Error('EIO (injected)'); } }),
        (e: unknown) => e instanceof RuntimeFileError && /could not be written \(journal .*runtime\.journal\): EIO \(injected\)/.test(e.message),
      );
      assert.deepEqual(store.reload(NAME), state(1));
      // A record written whole but whose flush failed: invalidated, so the file reads as before.
      assert.throws(() => store.save(state(3), { beforeSync: () => { throw new Error('fdatasync failed (injected)'); } }), RuntimeFileError);
      assert.deepEqual(loadRuntimeFile(file, NAME), state(1));
      assert.deepEqual(markOf(file), mark, 'the failed saves did not compact');
      store.save(state(4));
      assert.notEqual(markOf(file).base, mark.base, 'the save after a failure compacts');
      assert.deepEqual(loadRuntimeFile(file, NAME), state(4));
    });

    it('a journal record that passes its crc is still checked as a runtime file', () => {
      storeWith(state(0));
      const { base, seq } = markOf(file);
      const rec = encodeRecord(Buffer.from(base, 'hex'), seq + 1, Buffer.from(JSON.stringify({ ...state(1), kvm_cmd: '-m 512' })));
      writeAt(journal, 0, rec);
      assert.throws(
        () => loadRuntimeFile(file, NAME),
        (e: unknown) => e instanceof RuntimeFileError && e.message.includes(`runtime.journal (record ${seq + 1})`) && /"kvm_cmd" is not a list of strings/.test(e.message),
      );
    });
  });

  describe('damaged and stale journals', () => {
    it('a corrupt checksum in the newest record loads the record before it; the next save goes on from there', () => {
      const { store } = storeWith(state(0));
      store.save(state(1));
      store.save(state(2));
      const base = Buffer.from(markOf(file).base, 'hex');
      const last = scanJournal(readJournal(journal), base).latest;
      assert.ok(last);
      writeAt(journal, last.end - 3, Buffer.from('!!!'));
      assert.deepEqual(loadRuntimeFile(file, NAME), state(1));
      const reopened = RuntimeStore.open(file, NAME);
      assert.deepEqual(reopened.data, state(1));
      reopened.store.save(state(5));
      assert.deepEqual(loadRuntimeFile(file, NAME), state(5));
    });

    it('a journal older than the runtime file (another base, or seqs the file already has) is ignored', () => {
      const { store } = storeWith(state(0));
      store.save(state(1));
      store.save(state(2));
      const oldJournal = fs.readFileSync(journal);
      const { base } = markOf(file);
      saveRuntimeFile(file, state(3)); // a compaction: new base
      fs.writeFileSync(journal, oldJournal); // the journal of the old base put back
      assert.deepEqual(loadRuntimeFile(file, NAME), state(3));
      // Records of the file's own base whose seqs are not above the file's.
      const now = markOf(file);
      const stale = encodeRecord(Buffer.from(now.base, 'hex'), now.seq, Buffer.from(JSON.stringify(state(9))));
      writeAt(journal, 0, stale);
      assert.deepEqual(loadRuntimeFile(file, NAME), state(3));
      assert.notEqual(now.base, base);
    });

    it('a journal that cannot be read makes the load fail, naming it', () => {
      storeWith(state(0));
      fs.rmSync(journal);
      fs.mkdirSync(journal);
      assert.throws(() => loadRuntimeFile(file, NAME), (e: unknown) => e instanceof RuntimeFileError && e.message.includes(`its journal ${journal} cannot be read`) && /EISDIR/.test(e.message));
    });
  });

  describe('a writer killed (SIGKILL) during a save', () => {
    beforeEach(function () {
      this.timeout(30000);
    });

    it('mid-append (a torn record): the state before; the next save goes on', () => {
      storeWith(state(0)).store.save(state(1));
      killedChild(file, `
        const { store } = rs.RuntimeStore.open(file, NAME);
        store.save(state(2), { appendBytes: (r) => Math.floor(r.length / 2), beforeSync: die });
      `);
      assert.deepEqual(loadRuntimeFile(file, NAME), state(1));
      const { store, data } = RuntimeStore.open(file, NAME);
      assert.deepEqual(data, state(1));
      store.save(state(3));
      assert.deepEqual(loadRuntimeFile(file, NAME), state(3));
      store.save(state(4));
      assert.deepEqual(loadRuntimeFile(file, NAME), state(4));
    });

    it('after the record is written, before its flush: the state after (the page cache holds it whole)', () => {
      storeWith(state(0)).store.save(state(1));
      killedChild(file, `
        const { store } = rs.RuntimeStore.open(file, NAME);
        store.save(state(2), { beforeSync: die });
      `);
      assert.deepEqual(loadRuntimeFile(file, NAME), state(2));
    });

    it('mid-compaction, before the rename: the state before, journal records included', () => {
      storeWith(state(0)).store.save(state(1));
      const before = fs.readFileSync(file);
      killedChild(file, `rs.saveRuntimeFile(file, state(2), { beforeRename: die });`);
      assert.deepEqual(fs.readFileSync(file), before);
      assert.deepEqual(loadRuntimeFile(file, NAME), state(1));
    });

    it('a compaction forced by the record count, killed before the rename: the state before', () => {
      storeWith(state(0));
      killedChild(file, `
        const { store } = rs.RuntimeStore.open(file, NAME);
        for (let i = 1; i <= ${JOURNAL_MAX_RECORDS}; i++) store.save(state(i));
        store.save(state(500), { beforeRename: die });
      `);
      assert.deepEqual(loadRuntimeFile(file, NAME), state(JOURNAL_MAX_RECORDS));
    });

    it('between the rename and the journal reset: the state after, the old records ignored', () => {
      storeWith(state(0)).store.save(state(1));
      killedChild(file, `rs.saveRuntimeFile(file, state(2), { beforeJournalReset: die });`);
      assert.deepEqual(loadRuntimeFile(file, NAME), state(2));
      const { store, data } = RuntimeStore.open(file, NAME);
      assert.deepEqual(data, state(2));
      store.save(state(3));
      assert.deepEqual(loadRuntimeFile(file, NAME), state(3));
    });
  });

  it('removeInstanceDir deletes the runtime file first, then the directory', () => {
    const inst = path.join(dir, 'inst');
    fs.mkdirSync(inst);
    const f = path.join(inst, 'runtime.json');
    saveRuntimeFile(f, state(0));
    removeInstanceDir(inst, f);
    assert.equal(fs.existsSync(inst), false);
  });

  function storeWith(data: RuntimeData): { store: RuntimeStore } {
    const store = RuntimeStore.fresh(file);
    store.save(data);
    return { store };
  }
});

function writeAt(file: string, offset: number, bytes: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}
