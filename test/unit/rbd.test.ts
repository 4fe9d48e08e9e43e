import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HypervisorError, InvalidArgumentError } from '../../src/hypervisor/errors';
import { requestedBacking } from '../../src/noded/disk-kinds';
import {
  RBD_CLIENT_CONF,
  RBD_CONF_NAME,
  assertRbdAccess,
  ensureRbdConf,
  hotplugConfPath,
  parseRbdSpec,
  rbdBlockdevOptions,
  rbdBootArgs,
  rbdSecretObject,
  type RbdAccess,
} from '../../src/hypervisor/rbd-disk';
import { parseRbdMonitors, rbdConfigFromFlags, readRbdKey, rbdWords } from '../../src/noded/rbd-pool';
import { buildFixedCommand } from '../../src/hypervisor/qemu-command';
import type { RuntimeData } from '../../src/hypervisor/runtime-file';
import { validateRuntime } from '../../src/hypervisor/runtime-validate';
import { findRbdModule, lddDependencies, prepareRbdChroot } from '../../src/hypervisor/rbd-chroot';

const KEY = 'AQDh3Cppt0pVHRAAmO6V8d0mnqXmhq5QNr3wJg==';
const access: RbdAccess = { monitors: [{ host: '127.0.0.1', port: '3300' }, { host: 'mon2.example', port: '6789' }], user: 'gnt', key: KEY };

describe('rbd-disk: QEMU options of an RBD disk', () => {
  it('builds the blockdev-add arguments: pool, image, user, the secret, the monitors and the bounded conf', () => {
    assert.deepEqual(rbdBlockdevOptions('disk-3f2a9c1e-pci-9', { pool: 'rbd', image: 'web1-3f2a9c1e' }, access, '/run/gnt-hotplug/gnt-rbd-client.conf'), {
      driver: 'rbd',
      'node-name': 'disk-3f2a9c1e-pci-9',
      pool: 'rbd',
      image: 'web1-3f2a9c1e',
      user: 'gnt',
      'key-secret': 'disk-3f2a9c1e-pci-9-key',
      'auth-client-required': ['cephx'],
      server: [{ host: '127.0.0.1', port: '3300' }, { host: 'mon2.example', port: '6789' }],
      conf: '/run/gnt-hotplug/gnt-rbd-client.conf',
    });
  });

  it('gives the key as a base64 secret object, the key string as is', () => {
    assert.deepEqual(rbdSecretObject('disk-1-pci-9', KEY), { 'qom-type': 'secret', id: 'disk-1-pci-9-key', data: KEY, format: 'base64' });
  });

  it('boot args read the secret from a file, never from the command line', () => {
    const args = rbdBootArgs('disk-1-pci-9', { pool: 'rbd', image: 'a' }, access, '/var/lib/gnt/i1/rbd-key', '/c.conf');
    assert.equal(args[0], '-object');
    assert.equal(args[1], 'secret,id=disk-1-pci-9-key,file=/var/lib/gnt/i1/rbd-key,format=base64');
    assert.ok(!args.join(' ').includes(KEY));
    assert.equal(args[2], '-blockdev');
    assert.equal(JSON.parse(args[3]).driver, 'rbd');
    // A comma in the key file path cannot add options.
    assert.match(rbdBootArgs('d', { pool: 'p', image: 'i' }, access, '/x,data=evil', '/c')[1], /file=\/x,,data=evil,format/);
  });

  it('conf bounds the connect and every librados call', () => {
    assert.match(RBD_CLIENT_CONF, /^\[global\]$/m);
    assert.match(RBD_CLIENT_CONF, /^client_mount_timeout = 5$/m);
    assert.match(RBD_CLIENT_CONF, /^rados_mon_op_timeout = \d+$/m);
    assert.match(RBD_CLIENT_CONF, /^rados_osd_op_timeout = \d+$/m);
  });

  it('writes the conf 0644 whatever the umask, and inside a chroot names it as QEMU sees it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-rbdconf-'));
    const old = process.umask(0o077);
    try {
      const f = ensureRbdConf(dir);
      assert.equal(f, path.join(dir, RBD_CONF_NAME));
      assert.equal(fs.statSync(f).mode & 0o777, 0o644);
      assert.equal(fs.readFileSync(f, 'utf8'), RBD_CLIENT_CONF);
      const host = { access, confFile: '/run/x.conf', removeImage: async () => undefined, checkImage: async () => undefined };
      assert.equal(hotplugConfPath(host, undefined), '/run/x.conf');
      const chroot = path.join(dir, 'ch');
      fs.mkdirSync(chroot);
      assert.equal(hotplugConfPath(host, chroot), `/${RBD_CONF_NAME}`);
      assert.ok(fs.existsSync(path.join(chroot, RBD_CONF_NAME)));
    } finally {
      process.umask(old);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('parses POOL/IMAGE and refuses what is not', () => {
    assert.deepEqual(parseRbdSpec('rbd/web1-disk'), { pool: 'rbd', image: 'web1-disk' });
    for (const bad of ['rbd', 'rbd/', '/img', 'a/b/c', 'rbd/im age', 'rbd/a@snap', 'rbd/..', 'rbd/-x'])
      assert.throws(() => parseRbdSpec(bad), InvalidArgumentError, bad);
  });

  it('checks the access QEMU gets', () => {
    assert.equal(assertRbdAccess(access), access);
    assert.throws(() => assertRbdAccess({ ...access, monitors: [] }), /at least one monitor/);
    assert.throws(() => assertRbdAccess({ ...access, key: 'not a key!' }), /not a base64 string/);
    assert.throws(() => assertRbdAccess({ ...access, user: 'client gnt' }), /client id/);
    assert.throws(() => assertRbdAccess({ ...access, monitors: [{ host: '1.2.3.4', port: '99999' }] }), /not a port number/);
  });
});

describe('rbd-pool: gnt-noded --rbd-* options', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-rbdopt-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('parses --rbd-monitors, IPv6 in brackets', () => {
    assert.deepEqual(parseRbdMonitors('10.0.0.1:3300,[::1]:6789,mon-c:3300'), [
      { host: '10.0.0.1', port: '3300' },
      { host: '::1', port: '6789' },
      { host: 'mon-c', port: '3300' },
    ]);
    for (const bad of ['10.0.0.1', '10.0.0.1:0', 'a:70000', '', 'a:1,', 'a b:1'])
      assert.throws(() => parseRbdMonitors(bad), /--rbd-monitors .* is not HOST:PORT/, bad);
  });

  it('wants all of monitors, pool and keyring, or none; --rbd-id defaults to gnt', () => {
    assert.equal(rbdConfigFromFlags({}), undefined);
    assert.deepEqual(rbdConfigFromFlags({ monitors: '127.0.0.1:3300', pool: 'rbd', keyring: '/k' }), {
      monitors: [{ host: '127.0.0.1', port: '3300' }],
      pool: 'rbd',
      clientId: 'gnt',
      keyring: '/k',
    });
    assert.throws(() => rbdConfigFromFlags({ monitors: '127.0.0.1:3300', pool: 'rbd' }), /all of --rbd-monitors, --rbd-pool and --rbd-keyring/);
    assert.throws(() => rbdConfigFromFlags({ id: 'x' }), /--rbd-id needs/);
    assert.throws(() => rbdConfigFromFlags({ monitors: '127.0.0.1:3300', pool: 'rbd', keyring: '/k', id: 'client.x' }), /without "client\."/);
    assert.throws(() => rbdConfigFromFlags({ monitors: '127.0.0.1:3300', pool: 'a/b', keyring: '/k' }), /--rbd-pool/);
  });

  it('says what failed in librados\' words, without log prefixes, with the errno', () => {
    const err = { code: 110, stderr: '2026-12-02T07:03:53.813+0000 7f765c2a0380  0 monclient(hunting): authenticate timed out after 5\nrbd: couldn\'t connect to the cluster!\n' };
    assert.equal(rbdWords(err), "monclient(hunting): authenticate timed out after 5; rbd: couldn't connect to the cluster! (Connection timed out)");
    assert.equal(rbdWords({ code: 2, stderr: 'rbd: error opening image x: (2) No such file or directory\n' }), 'rbd: error opening image x: (2) No such file or directory');
  });

  it('reads the key of the client from a root-only keyring, refuses one others can read', () => {
    const k = path.join(dir, 'client.gnt.keyring');
    fs.writeFileSync(k, `[client.other]\n\tkey = AQAAAA==\n[client.gnt]\n\tkey = ${KEY}\n\tcaps mon = "profile rbd"\n`, { mode: 0o600 });
    assert.equal(readRbdKey(k, 'gnt'), KEY);
    assert.throws(() => readRbdKey(k, 'nobody'), /has no key for client\.nobody/);
    fs.chmodSync(k, 0o644);
    assert.throws(() => readRbdKey(k, 'gnt'), /readable by others \(mode 644\): make it root-only/);
    assert.throws(() => readRbdKey(path.join(dir, 'missing'), 'gnt'), /cannot be read/);
  });
});

describe('runtime validator: disks on RBD images (a runtime file carried to a migration target)', () => {
  const base = (disk: Record<string, unknown>): RuntimeData =>
    ({
      version: 2,
      instance: 'web1',
      kvm_cmd: buildFixedCommand({ name: 'web1', memoryMiB: 256, vcpus: 1, kernel: '/boot/vmlinuz' }),
      nics: [],
      block_devices: [{ uuid: 'd-1', pci: 5, ...disk }],
      hvparams: {},
    }) as unknown as RuntimeData;

  it('accepts an rbd disk whose path names its image, and a blockdev disk', () => {
    validateRuntime(base({ path: 'rbd:rbd/web1-d-1', template: 'rbd', rbd: { pool: 'rbd', image: 'web1-d-1' }, created: true }));
    validateRuntime(base({ path: '/dev/loop3', template: 'blockdev' }));
  });

  it('refuses an rbd entry that does not match its path, a bad name, or rbd on a file disk', () => {
    assert.throws(() => validateRuntime(base({ path: 'rbd:rbd/other', template: 'rbd', rbd: { pool: 'rbd', image: 'web1-d-1' } })), /must be rbd:POOL\/IMAGE/);
    assert.throws(() => validateRuntime(base({ path: 'rbd:rbd/a b', template: 'rbd', rbd: { pool: 'rbd', image: 'a b' } })), /an RBD name/);
    assert.throws(() => validateRuntime(base({ path: '/srv/x.img', rbd: { pool: 'rbd', image: 'x' } })), /belongs to template rbd only/);
    assert.throws(() => validateRuntime(base({ path: 'rbd:rbd/x', template: 'nfs' })), /must be blockdev or rbd/);
    assert.throws(() => validateRuntime(base({ path: 'rbd:rbd/x' })), /absolute path/);
  });
});

describe('rbd-chroot: QEMU\'s rbd module inside a chroot (needs qemu-block-extra, as QEMU from setup-host.sh brings)', () => {
  let chroot: string;
  beforeEach(() => {
    chroot = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-rbdchroot-'));
  });
  afterEach(() => fs.rmSync(chroot, { recursive: true, force: true }));

  it('links the module and every library ldd names at their host paths (soname links too), traversable, idempotent', () => {
    const module = findRbdModule();
    assert.ok(module, 'block-rbd.so is installed (qemu-block-extra)');
    const libs = lddDependencies(module);
    assert.ok(libs.some((l) => /librbd\.so\.1$/.test(l)), `ldd names librbd.so.1: ${libs.join(' ')}`);
    assert.ok(libs.some((l) => /libceph-common\.so/.test(l)), 'and libceph-common');
    const old = process.umask(0o077);
    try {
      const r = prepareRbdChroot(chroot);
      assert.ok(r.files.includes(module));
      const inChroot = path.join(chroot, module);
      assert.equal(fs.statSync(inChroot).ino, fs.statSync(module).ino, 'a hardlink of the host file');
      const librbd = libs.find((l) => /librbd\.so\.1$/.test(l)) as string;
      const asked = path.join(fs.realpathSync(path.dirname(librbd)), 'librbd.so.1');
      assert.ok(fs.existsSync(path.join(chroot, asked)), `the soname ${asked} is there`);
      assert.equal(fs.readlinkSync(path.join(chroot, 'lib')), fs.readlinkSync('/lib'));
      assert.equal(fs.statSync(chroot).mode & 0o011, 0o011, 'the chroot is traversable');
      assert.equal(fs.statSync(path.dirname(inChroot)).mode & 0o777, 0o755, 'new directories are 0755 whatever the umask');
      // A file replaced on the host (an upgrade) is linked anew at the next start.
      fs.rmSync(inChroot);
      fs.writeFileSync(inChroot, 'old version');
      prepareRbdChroot(chroot);
      assert.equal(fs.statSync(inChroot).ino, fs.statSync(module).ino);
    } finally {
      process.umask(old);
    }
  });
});

describe('node: the rbd template of a requested disk (disk-kinds.ts requestedBacking)', () => {
  const images = { imageFor: (u: string) => ({ pool: 'rbd', image: `web1-${u}` }) };
  const disk = (over: Record<string, string>) => ({ uuid: 'd1', template: 'rbd', path: '', rbdPool: '', rbdImage: '', diskType: '', ...over });

  it('makes <instance>-<uuid> in the node\'s pool, or adopts POOL/IMAGE', () => {
    assert.deepEqual(requestedBacking(disk({}), 'node1', images), { backing: { template: 'rbd', rbd: { pool: 'rbd', image: 'web1-d1' } }, path: 'rbd:rbd/web1-d1', create: true });
    assert.deepEqual(requestedBacking(disk({ rbdPool: 'vms', rbdImage: 'img1' }), 'node1', images), { backing: { template: 'rbd', rbd: { pool: 'vms', image: 'img1' } }, path: 'rbd:vms/img1', create: false });
  });

  it('keeps the refusal on a node without --rbd-*, and refuses a host path or a bad name', () => {
    assert.throws(() => requestedBacking(disk({}), 'node1'), (e: unknown) => e instanceof HypervisorError && e.code === 'FAILED_PRECONDITION' && /node node1 has no RBD configured/.test(e.message));
    assert.throws(() => requestedBacking(disk({ path: '/dev/sdb' }), 'node1', images), /has no host path/);
    assert.throws(() => requestedBacking(disk({ rbdPool: 'rbd', rbdImage: 'a b' }), 'node1', images), /is not POOL\/IMAGE/);
  });
});
