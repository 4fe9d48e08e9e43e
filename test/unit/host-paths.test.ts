import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { globRegExp, HostPathError, HostPathPolicy } from '../../src/hypervisor/host-paths';
import { openBeneath } from '../../src/hypervisor/native';
import { tempDir } from '../support/guest';

/** The fds this process has open. */
const fdCount = (): number => fs.readdirSync('/proc/self/fd').length;

describe('host paths: the policy decides by resolution', () => {
  let root: string;
  let storage: string;
  let images: string;
  let outside: string;
  let policy: HostPathPolicy;

  beforeEach(() => {
    root = tempDir('host-paths');
    storage = path.join(root, 'storage');
    images = path.join(root, 'images');
    outside = path.join(root, 'outside');
    for (const d of [storage, path.join(storage, 'x'), path.join(storage, 'web1'), images, outside]) fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(storage, 'web1', 'a.img'), 'disk');
    fs.writeFileSync(path.join(outside, 'victim.img'), 'secret');
    fs.writeFileSync(path.join(images, 'vmlinuz'), 'kernel');
    fs.writeFileSync(path.join(outside, 'vmlinuz'), 'other kernel');
    policy = new HostPathPolicy({ storageDir: storage, imageDir: images });
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  const refused = (re: RegExp) => (e: unknown): boolean => e instanceof HostPathError && e.code === 'INVALID_ARGUMENT' && re.test(e.message);

  it('opens a disk file beneath the storage directory, O_RDWR, as a regular file', () => {
    const before = fdCount();
    const f = policy.openDisk(path.join(storage, 'web1', 'a.img'));
    try {
      assert.equal(f.kind, 'file');
      assert.equal(f.realPath, path.join(storage, 'web1', 'a.img'));
      assert.equal(fs.readFileSync(`/proc/self/fd/${f.fd}`, 'utf8'), 'disk');
      fs.writeSync(f.fd, 'DISK', 0);
    } finally {
      f.close();
    }
    assert.equal(fs.readFileSync(path.join(storage, 'web1', 'a.img'), 'utf8'), 'DISK');
    assert.equal(fdCount(), before);
  });

  it('refuses a disk outside the storage directory, naming it and the rule', () => {
    assert.throws(() => policy.openDisk(path.join(outside, 'victim.img')), refused(new RegExp(`"${outside}/victim.img" is outside the storage directory ${storage}: .*--block-device`)));
  });

  it('refuses ".." that leaves the storage directory, lexically and by resolution', () => {
    assert.throws(() => policy.openDisk(`${storage}/x/../../outside/victim.img`), refused(/is outside the storage directory/));
    // ".." that stays inside is fine
    assert.equal(policy.checkDisk(`${storage}/x/../web1/a.img`), 'file');
  });

  it('refuses a symlink inside the storage directory that points outside, and follows one that stays inside', () => {
    fs.symlinkSync(path.join(outside, 'victim.img'), path.join(storage, 'web1', 'evil.img'));
    fs.symlinkSync('../../outside', path.join(storage, 'x', 'dirlink'));
    fs.symlinkSync('a.img', path.join(storage, 'web1', 'good.img'));
    fs.symlinkSync('../web1', path.join(storage, 'x', 'web1link'));
    const before = fdCount();
    assert.throws(() => policy.openDisk(path.join(storage, 'web1', 'evil.img')), refused(/escapes the storage directory .* \(a symlink or "\.\." leads outside it/));
    assert.throws(() => policy.openDisk(path.join(storage, 'x', 'dirlink', 'victim.img')), refused(/escapes the storage directory/));
    assert.equal(fdCount(), before, 'no fd left by a refusal');
    assert.equal(policy.checkDisk(path.join(storage, 'web1', 'good.img')), 'file');
    assert.equal(policy.openDisk(path.join(storage, 'x', 'web1link', 'a.img')).realPath, path.join(storage, 'web1', 'a.img'));
  });

  it('refuses relative paths, NULs, missing files and what is neither file nor block device', () => {
    assert.throws(() => policy.openDisk('web1/a.img'), refused(/disk path "web1\/a.img" is not absolute/));
    assert.throws(() => policy.openDisk(`${storage}/a\0b`), refused(/contains a NUL byte/));
    assert.throws(() => policy.openDisk(path.join(storage, 'web1', 'none.img')), refused(/does not exist/));
    assert.throws(() => policy.openDisk(path.join(storage, 'web1')), refused(/is a directory, neither a regular file nor a block device/));
    execFileSync('mkfifo', [path.join(storage, 'web1', 'fifo')]);
    assert.throws(() => policy.openDisk(path.join(storage, 'web1', 'fifo')), refused(/neither a regular file nor a block device/));
  });

  it('quotes a long untrusted path only in part', () => {
    const long = `${outside}/${'a'.repeat(5000)}`;
    assert.throws(() => policy.openDisk(long), (e: unknown) => e instanceof HostPathError && e.message.length < 1000 && /…\(\d+ chars\)/.test(e.message));
  });

  it('kernels and initrds only beneath the image directory, by resolution', () => {
    const k = policy.openBootFile(path.join(images, 'vmlinuz'), 'kernel');
    assert.equal(k.kind, 'file');
    k.close();
    assert.throws(() => policy.openBootFile(path.join(outside, 'vmlinuz'), 'kernel'), refused(/kernel ".*outside\/vmlinuz" is outside the image directory .* --image-dir/));
    fs.symlinkSync(path.join(outside, 'vmlinuz'), path.join(images, 'initrd.gz'));
    assert.throws(() => policy.openBootFile(path.join(images, 'initrd.gz'), 'initrd'), refused(/initrd .* escapes the image directory/));
    assert.throws(() => policy.openBootFile(images, 'kernel'), refused(/is outside the image directory|not a regular file/));
    fs.mkdirSync(path.join(images, 'sub'));
    assert.throws(() => policy.openBootFile(path.join(images, 'sub'), 'kernel'), refused(/not a regular file/));
  });

  it('a configured directory that is missing is named as such', () => {
    const missing = new HostPathPolicy({ storageDir: storage, imageDir: path.join(root, 'no-images') });
    assert.throws(() => missing.openBootFile(path.join(root, 'no-images', 'vmlinuz'), 'kernel'), refused(/kernel ".*" is refused: the node's image directory .*no-images cannot be opened \(ENOENT; gnt-noded --image-dir\)/));
  });

  it('a policy without directories refuses everything', () => {
    const none = HostPathPolicy.denyAll();
    assert.throws(() => none.openDisk(path.join(storage, 'web1', 'a.img')), refused(/no storage directory configured/));
    assert.throws(() => none.openBootFile(path.join(images, 'vmlinuz'), 'kernel'), refused(/no image directory configured/));
    assert.throws(() => none.assertNewDiskPath(path.join(storage, 'web1', 'n.img')), refused(/no storage directory configured/));
  });

  it('creates new disk files beneath storage only, exclusively, 0600, never through a symlink', () => {
    const p = path.join(storage, 'web1', 'new.img');
    const fd = policy.createDiskFile(p);
    fs.closeSync(fd);
    assert.equal(fs.statSync(p).mode & 0o777, 0o600);
    assert.throws(() => policy.createDiskFile(p), refused(/exists already/));
    fs.symlinkSync(path.join(outside, 'planted.img'), path.join(storage, 'web1', 'planted.img'));
    assert.throws(() => policy.createDiskFile(path.join(storage, 'web1', 'planted.img')), refused(/exists already|escapes/));
    assert.ok(!fs.existsSync(path.join(outside, 'planted.img')), 'nothing created outside');
    fs.symlinkSync(outside, path.join(storage, 'web2'));
    assert.throws(() => policy.createDiskFile(path.join(storage, 'web2', 'd.img')), refused(/escapes the storage directory/));
    assert.deepEqual(fs.readdirSync(outside).sort(), ['victim.img', 'vmlinuz']);
    assert.throws(() => policy.createDiskFile(path.join(outside, 'n.img')), refused(/outside the storage directory/));
  });

  it('deletes node-created disk files beneath storage only, never through a symlinked directory', () => {
    const p = path.join(storage, 'web1', 'a.img');
    assert.equal(policy.removeDiskFile(p), true);
    assert.ok(!fs.existsSync(p));
    assert.equal(policy.removeDiskFile(p), false, 'already gone');
    fs.symlinkSync(outside, path.join(storage, 'web2'));
    assert.equal(policy.removeDiskFile(path.join(storage, 'web2', 'victim.img')), false);
    assert.equal(policy.removeDiskFile(path.join(outside, 'victim.img')), false);
    assert.equal(policy.removeDiskFile(`${storage}/x/../../outside/victim.img`), false);
    assert.ok(fs.existsSync(path.join(outside, 'victim.img')), 'nothing outside deleted');
    fs.symlinkSync(path.join(outside, 'victim.img'), path.join(storage, 'web1', 'link.img'));
    assert.equal(policy.removeDiskFile(path.join(storage, 'web1', 'link.img')), true, 'a symlink itself is removed');
    assert.ok(fs.existsSync(path.join(outside, 'victim.img')), 'not what it points to');
  });

  it('block devices: only allow-listed ones, matched on the resolved path; refused ones name the flag', () => {
    const strict = new HostPathPolicy({ storageDir: storage, imageDir: images, blockDevices: ['/dev/loop*'] });
    // /dev/null is a character device: refused even when allow-listed
    const withNull = new HostPathPolicy({ storageDir: storage, blockDevices: ['/dev/null'] });
    assert.throws(() => withNull.openDisk('/dev/null'), refused(/is not a block device/));
    assert.throws(() => policy.openDisk('/dev/null'), refused(/outside the storage directory/));
    const loops = fs.readdirSync('/dev').filter((n) => /^loop\d+$/.test(n));
    if (!loops.length) return; // no loop device nodes here: the integration test says so
    const dev = `/dev/${loops[0]}`;
    assert.throws(() => policy.openDisk(dev), refused(new RegExp(`block device "${dev}" is not in the node's allow-list \\(gnt-noded --block-device\\)`)));
    // A symlink to an allowed device is matched by where it leads (opening an unbound loop device fails with ENXIO: fine, not a policy refusal).
    fs.symlinkSync(dev, path.join(outside, 'lnk'));
    assert.throws(() => policy.openDisk(path.join(outside, 'lnk')), refused(/is not in the node's allow-list/));
    try {
      strict.openDisk(path.join(outside, 'lnk')).close();
    } catch (e) {
      assert.match((e as Error).message, /cannot open block device|No such device/);
    }
  });

  it('globs: * and ? within one component, everything else literal', () => {
    assert.ok(globRegExp('/dev/loop*').test('/dev/loop3'));
    assert.ok(!globRegExp('/dev/loop*').test('/dev/loop/3'));
    assert.ok(globRegExp('/dev/vg0/?').test('/dev/vg0/a'));
    assert.ok(!globRegExp('/dev/vg0/?').test('/dev/vg0/ab'));
    assert.ok(!globRegExp('/dev/sd.').test('/dev/sda'));
    assert.ok(globRegExp('/dev/mapper/vg-lv[1]').test('/dev/mapper/vg-lv[1]'));
    assert.throws(() => new HostPathPolicy({ storageDir: storage, blockDevices: ['loop*'] }), /allow-list entry path "loop\*" is not absolute/);
  });

  describe('the native openBeneath', () => {
    const check = (): void => {
      fs.symlinkSync(path.join(outside, 'victim.img'), path.join(storage, 'esc'));
      const fd = openBeneath(storage, 'web1/a.img', fs.constants.O_RDONLY);
      assert.equal(fs.readlinkSync(`/proc/self/fd/${fd}`), path.join(storage, 'web1', 'a.img'));
      fs.closeSync(fd);
      for (const rel of ['esc', 'x/../../outside/victim.img', `${outside}/victim.img`])
        assert.throws(() => openBeneath(storage, rel, fs.constants.O_RDONLY), (e: unknown) => (e as { code?: string }).code === 'EXDEV' && new RegExp(`openat2\\(${storage}, `).test((e as Error).message));
      assert.throws(() => openBeneath(path.join(root, 'nodir'), 'a', 0), (e: unknown) => (e as { code?: string }).code === 'ENOENT' && /open\(.*nodir, O_PATH\|O_DIRECTORY\)/.test((e as Error).message));
    };

    it('resolves beneath the directory and fails escapes with EXDEV (openat2)', check);

    it('the fallback without openat2 walks without following symlinks', () => {
      process.env.GNT_TEST_NO_OPENAT2 = '1';
      try {
        fs.symlinkSync('a.img', path.join(storage, 'web1', 'inner'));
        assert.throws(() => openBeneath(storage, 'web1/inner', 0), (e: unknown) => (e as { code?: string }).code === 'ELOOP');
        assert.throws(() => openBeneath(storage, 'x/../web1/a.img', 0), (e: unknown) => (e as { code?: string }).code === 'EXDEV');
        const fd = openBeneath(storage, 'web1/a.img', 0);
        fs.closeSync(fd);
        fs.symlinkSync(path.join(outside, 'victim.img'), path.join(storage, 'esc'));
        assert.throws(() => openBeneath(storage, 'esc', 0), (e: unknown) => (e as { code?: string }).code === 'ELOOP');
        assert.throws(() => openBeneath(storage, `${outside}/victim.img`, 0), (e: unknown) => (e as { code?: string }).code === 'EXDEV');
      } finally {
        delete process.env.GNT_TEST_NO_OPENAT2;
      }
    });
  });
});
