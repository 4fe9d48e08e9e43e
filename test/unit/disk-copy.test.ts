/**
 * The pure and file-level parts of migration with local disks: which disks
 * are copied, the disk copy mark in the runtime file, storage ids, whether a
 * node certificate names the migration address, and the cluster setting.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createCa, issueCertificate } from '../../src/common/pki';
import { nodeRole } from '../../src/common/cert-roles';
import { disksToCopy, mirrorProblem } from '../../src/hypervisor/disk-mirror';
import { RuntimeFileError } from '../../src/hypervisor/errors';
import { parseRuntime, serializeRuntime, type RuntimeData } from '../../src/hypervisor/runtime-file';
import { needsDiskCopy } from '../../src/master/jobs/migrate-disk-copy';
import { prepareJob } from '../../src/master/jobs/ops';
import { certCoversHost } from '../../src/noded/migration-cert';
import { ensureStorageId, STORAGE_ID_FILE } from '../../src/noded/storage-id';
import type { NodeInfoReply__Output } from '../../src/generated/gnt/node/v1/NodeInfoReply';
import type { SubmitJobRequest__Output } from '../../src/generated/gnt/master/v1/SubmitJobRequest';

const runtime = (extra: Partial<RuntimeData> = {}): RuntimeData =>
  ({ version: 2, instance: 'web1', kvm_cmd: ['qemu-system-x86_64', '-name', 'web1'], nics: [], hvparams: {}, block_devices: [], ...extra }) as RuntimeData;

describe('migration with local disks: the parts without QEMU', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-diskcopy-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('copies file disks (virtio-blk and SCSI) but not blockdev or rbd disks', () => {
    const data = runtime({
      block_devices: [
        { uuid: 'aaaaaaaa-1', path: '/s/web1/a.img', pci: 4 },
        { uuid: 'bbbbbbbb-1', path: '/dev/loop3', pci: 5, template: 'blockdev' },
        { uuid: 'cccccccc-1', path: 'rbd:rbd/img', pci: 6, template: 'rbd', rbd: { pool: 'rbd', image: 'img' } },
      ],
      scsi_disks: [{ uuid: 'dddddddd-1', path: '/s/web1/d.img', target: 0, lun: 1 }],
    });
    assert.deepEqual(disksToCopy(data), [
      { uuid: 'aaaaaaaa-1', node: 'disk-aaaaaaaa-pci-4', path: '/s/web1/a.img' },
      { uuid: 'dddddddd-1', node: 'scsi-dddddddd-0-1', path: '/s/web1/d.img' },
    ]);
  });

  it('keeps the disk copy mark across a save and load, and refuses a broken one', () => {
    const diskCopy = { disks: [{ uuid: 'u', node: 'disk-u-pci-4', path: '/s/web1/u.img' }], nbd: '127.0.0.1:1', files: ['/s/web1/u.img'] };
    const data = runtime({ migration: { role: 'target', peer: 'node1', since: 'now', diskCopy, tls: true } });
    assert.deepEqual(parseRuntime('f', serializeRuntime(data), 'web1').migration, data.migration);
    const broken = JSON.parse(serializeRuntime(data)) as { migration: { diskCopy: { nbd: unknown } } };
    broken.migration.diskCopy.nbd = 5;
    assert.throws(() => parseRuntime('f', JSON.stringify(broken), 'web1'), (e: unknown) => e instanceof RuntimeFileError && /diskCopy/.test(e.message));
  });

  it('a mirror job that concluded, failed or vanished stops the copy', () => {
    const ok = { node: 'n', status: 'ready', ready: true, copiedBytes: 1, totalBytes: 1, error: '' };
    assert.equal(mirrorProblem([ok]), undefined);
    assert.match(mirrorProblem([ok, { ...ok, node: 'm', status: 'concluded', ready: false, error: 'Input/output error' }]) ?? '', /disk node m stopped \(job concluded: Input\/output error\)/);
    assert.match(mirrorProblem([{ ...ok, status: 'gone' }]) ?? '', /stopped/);
  });

  it('a storage id is made once, atomically, and the same directory always gives the same id', () => {
    const id = ensureStorageId(dir);
    assert.match(id, /^[0-9a-f]{32}$/);
    assert.equal(ensureStorageId(dir), id);
    assert.deepEqual(fs.readdirSync(dir), [STORAGE_ID_FILE], 'no temporary file left');
    const other = fs.mkdtempSync(path.join(dir, 'b'));
    assert.notEqual(ensureStorageId(other), id);
    fs.writeFileSync(path.join(other, STORAGE_ID_FILE), 'garbage\n');
    assert.throws(() => ensureStorageId(other), /is not a 32-digit hex id: fix or remove it/);
  });

  it('copies only between nodes that report different storage ids (none reported: shared, as before)', () => {
    const info = (storageId: string) => ({ storageId }) as NodeInfoReply__Output;
    assert.equal(needsDiskCopy(info('a'), info('b')), true);
    assert.equal(needsDiskCopy(info('a'), info('a')), false);
    assert.equal(needsDiskCopy(info(''), info('b')), false);
  });

  it('a node certificate names its migration address as IP or DNS subjectAltName', () => {
    const ca = createCa(dir, 'ca');
    const cert = fs.readFileSync(issueCertificate(ca, dir, 'node', nodeRole('node1'), { dns: ['node1.example'], ip: ['127.0.0.1'] }).cert);
    assert.equal(certCoversHost(cert, '127.0.0.1'), true);
    assert.equal(certCoversHost(cert, 'node1.example'), true);
    assert.equal(certCoversHost(cert, '127.0.0.2'), false);
    assert.equal(certCoversHost(cert, 'node2.example'), false);
  });

  it('gnt-cluster modify takes migration_tls on or off, nothing else', () => {
    const req = (migrationTls: string) => ({ op: 'clusterModify', clusterModify: { migrationTls } }) as unknown as SubmitJobRequest__Output;
    assert.deepEqual(prepareJob(req('off')).op, { type: 'cluster-modify', migrationTls: 'off' });
    assert.throws(() => prepareJob(req('maybe')), /--migration-tls must be on or off, not "maybe"/);
    assert.throws(() => prepareJob(req('')), /--migration-tls must be on or off/);
  });
});
