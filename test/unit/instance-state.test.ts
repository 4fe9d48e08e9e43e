/**
 * The instance's in-memory state never runs ahead of its runtime file, and
 * the operation journal survives a reopen (no QEMU needed).
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { instancePaths } from '../../src/hypervisor/instance-paths';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import { loadRuntimeFile, saveRuntimeFile } from '../../src/hypervisor/runtime-file';

describe('instance state and its runtime file', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-state-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('a save that fails puts memory back to what the file holds', async () => {
    const inst = KvmInstance.create(dir, { name: 'st1', memoryMiB: 128, vcpus: 1, kernel: '/nonexistent' });
    const paths = instancePaths(dir, 'st1');
    // Another writer rewrites the file (the same state): the instance's next save is then a whole-file write ...
    saveRuntimeFile(paths.runtimeFile, loadRuntimeFile(paths.runtimeFile, 'st1'));
    // ... whose temp file cannot be created: a directory is in its place.
    const temp = path.join(paths.dir, `.runtime.json.tmp-${process.pid}`);
    fs.mkdirSync(temp);
    await assert.rejects(inst.fenceOperation('op-1'), /could not be written/);
    assert.equal(inst.operationRecord('op-1'), undefined, 'nothing recorded in memory that the file lacks');
    assert.equal(inst.operations.records.length, 0);
    fs.rmdirSync(temp);
    const fenced = await inst.fenceOperation('op-1');
    assert.equal(fenced.state, 'failed');
    assert.equal(fenced.settledBy, 'fence');
  });

  it('keeps the operation journal across a reopen, and a fenced id stays refused', async () => {
    const inst = KvmInstance.create(dir, { name: 'st2', memoryMiB: 128, vcpus: 1, kernel: '/nonexistent' });
    await inst.fenceOperation('op-2');
    const again = KvmInstance.open(dir, 'st2');
    const rec = again.operationRecord('op-2');
    assert.equal(rec?.state, 'failed');
    assert.equal(rec?.revision, 1);
    await assert.rejects(again.hotAddNic({ uuid: 'n1', mac: '52:54:00:00:00:01' }, { operationId: 'op-2' }), /fenced/);
    assert.equal(again.runtime.nics.length, 0);
  });

  it('refuses a malformed operation id before anything is touched', async () => {
    const inst = KvmInstance.create(dir, { name: 'st3', memoryMiB: 128, vcpus: 1, kernel: '/nonexistent' });
    await assert.rejects(inst.hotAddNic({ uuid: 'n1', mac: '52:54:00:00:00:01' }, { operationId: 'bad id/..' }), /operation id .* is not valid/);
    await assert.rejects(inst.fenceOperation(''), /fencing needs an operation id/);
  });
});
