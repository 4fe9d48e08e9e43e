import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigStore } from '../../src/master/config/config-store';
import { openDb, type Db } from '../../src/master/config/db';
import { cursorOf, epochOf, noteEpoch, setCursor } from '../../src/master/config/oplog-cursors';

describe('operation-log cursors and journal epochs', () => {
  let dir: string;
  let db: Db;
  let inst: string;
  let node: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-cursor-'));
    db = openDb(path.join(dir, 'config.db'), { create: true });
    const c = new ConfigStore(db);
    node = c.addNode('n1', '127.0.0.1:1811').uuid;
    inst = c.addInstance({
      name: 'web1', nodeUuid: node, vcpus: 1, maxvcpus: 1, memoryMib: 128, maxmemMib: 128, kernel: '/k', initrd: '',
      kernelArgs: '', hvparams: {}, nics: [], disks: [],
    }).uuid;
  });
  afterEach(() => {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('learns the epoch of the first read without moving the cursor', () => {
    setCursor(db, inst, node, 5);
    assert.equal(noteEpoch(db, inst, node, 'e1'), false);
    assert.deepEqual([cursorOf(db, inst), epochOf(db, inst)], [5, 'e1']);
  });

  it('goes back to revision 0 when the journal started over (a new epoch)', () => {
    noteEpoch(db, inst, node, 'e1');
    setCursor(db, inst, node, 9);
    assert.equal(noteEpoch(db, inst, node, 'e1'), false, 'same journal');
    assert.equal(cursorOf(db, inst), 9);
    assert.equal(noteEpoch(db, inst, node, 'e2'), true);
    assert.deepEqual([cursorOf(db, inst), epochOf(db, inst)], [0, 'e2']);
    setCursor(db, inst, node, 3);
    assert.equal(epochOf(db, inst), 'e2', 'a cursor update keeps the epoch');
  });

  it('ignores a node that reports no epoch', () => {
    setCursor(db, inst, node, 4);
    assert.equal(noteEpoch(db, inst, node, ''), false);
    assert.equal(cursorOf(db, inst), 4);
  });
});
