import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RuntimeFileError } from '../../src/hypervisor/errors';
import {
  RUNTIME_VERSION,
  loadRuntimeFile,
  parseRuntime,
  saveRuntimeFile,
  serializeRuntime,
  type RuntimeData,
} from '../../src/hypervisor/runtime-file';

const FILE = '/srv/gnt/web-1/runtime.json';

/** The runtime file's data without the journal mark a compaction adds (runtime-store.ts). */
function withoutMark(file: string): unknown {
  const raw = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  assert.match(String((raw.journal_mark as { base?: unknown } | undefined)?.base), /^[0-9a-f]{32}$/, 'a saved file carries its journal mark');
  delete raw.journal_mark;
  return raw;
}
const asJson = (d: RuntimeData): unknown => JSON.parse(serializeRuntime(d));
const SAVED = ['runtime.journal', 'runtime.json'];

/** A NIC as Ganeti serializes objects.NIC.ToDict(). */
const ganetiNic = {
  mac: 'aa:00:00:35:d4:3e',
  ip: null,
  name: null,
  network: null,
  netinfo: null,
  nicparams: { link: 'br0', mode: 'bridged', vlan: '' },
  uuid: '3f2a9c1e-1111-2222-3333-444444444444',
  pci: 5,
};
/** A NIC from an old Ganeti: no uuid, no pci, link only in nicparams. */
const oldGanetiNic = { mac: 'aa:00:00:11:22:33', ip: null, nicparams: { link: 'xen-br1', mode: 'bridged' } };

const ganetiCmd = ['/usr/bin/kvm', '-name', 'web-1', '-m', '512', '-smp', '1'];
const ganetiHv = {
  kernel_path: '/boot/vmlinuz-3-kvmU',
  acpi: true,
  vnc_bind_address: null,
  cpu_cores: 0,
  security_model: 'none',
  cpu_mask: 'all',
  usb_devices: ['x'],
};

const v2 = (): RuntimeData => ({
  version: 2,
  instance: 'web-1',
  kvm_cmd: ['-name', 'web-1', '-machine', 'pc', '-m', '256M'],
  nics: [
    { uuid: 'n1', mac: '52:54:00:aa:bb:cc', link: 'br0', pci: 4, tap: 'gnttap0' },
    { uuid: 'n2', mac: '52:54:00:aa:bb:cd', pci: 7, state: 'attaching' },
  ],
  hvparams: { security_model: 'user', security_domain: 'gnt-qemu', acpi: true, cpu_cores: 2 },
  block_devices: [{ uuid: 'd1', path: '/dev/vg/disk0', pci: 5, state: 'detaching' }],
});

/** Runs fn and returns the RuntimeFileError it throws. */
function runtimeError(fn: () => unknown): RuntimeFileError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof RuntimeFileError, `expected a RuntimeFileError, got ${String(err)}`);
    assert.equal(err.code, 'FAILED_PRECONDITION');
    return err;
  }
  assert.fail('no error thrown');
}

describe('runtime-file', () => {
  describe('parseRuntime', () => {
    it('reads a Ganeti old-style 3-entry list into version 2 with no block devices', () => {
      const text = JSON.stringify([ganetiCmd, [ganetiNic, oldGanetiNic], ganetiHv]);
      assert.deepEqual(parseRuntime(FILE, text, 'web-1'), {
        version: 2,
        instance: 'web-1',
        kvm_cmd: ganetiCmd,
        nics: [
          { uuid: '3f2a9c1e-1111-2222-3333-444444444444', mac: 'aa:00:00:35:d4:3e', link: 'br0', pci: 5 },
          { uuid: '', mac: 'aa:00:00:11:22:33', link: 'xen-br1', pci: null },
        ],
        // null and list values are dropped; strings, numbers and booleans kept
        hvparams: { kernel_path: '/boot/vmlinuz-3-kvmU', acpi: true, cpu_cores: 0, security_model: 'none', cpu_mask: 'all' },
        block_devices: [],
      });
    });

    it('prefers a top-level "link" to the one in nicparams', () => {
      const text = JSON.stringify([[], [{ ...ganetiNic, link: 'br9' }], {}]);
      assert.equal(parseRuntime(FILE, text, 'web-1').nics[0].link, 'br9');
    });

    it('treats an out-of-range or non-integer pci as unknown (null)', () => {
      const nics = [32, -1, 2.5, '5'].map((pci, i) => ({ mac: `52:54:00:00:00:0${i}`, pci }));
      const parsed = parseRuntime(FILE, JSON.stringify([[], nics, {}]), 'web-1');
      assert.deepEqual(parsed.nics.map((n) => n.pci), [null, null, null, null]);
    });

    it('reads a 4-entry list whose block devices are Ganeti (disk, link, uri) tuples', () => {
      const disk0 = { dev_type: 'plain', logical_id: ['xenvg', 'disk0'], size: 1024, uuid: '0badcafe-0000', pci: 6, mode: 'rw' };
      const disk1 = { dev_type: 'drbd', size: 2048, mode: 'rw' };
      const text = JSON.stringify([
        ganetiCmd,
        [ganetiNic],
        ganetiHv,
        [
          [disk0, '/dev/xenvg/disk0', 'rbd:pool/disk0'],
          [disk1, '/var/run/ganeti/instance-disks/web-1:1', null],
        ],
      ]);
      const parsed = parseRuntime(FILE, text, 'web-1');
      assert.deepEqual(parsed.block_devices, [
        { uuid: '0badcafe-0000', path: '/dev/xenvg/disk0', pci: 6 },
        { uuid: '', path: '/var/run/ganeti/instance-disks/web-1:1', pci: null },
      ]);
      assert.equal(parsed.version, 2);
      assert.equal(parsed.nics.length, 1);
    });

    it('round-trips a version 2 object through serializeRuntime', () => {
      const data = v2();
      const text = serializeRuntime(data);
      assert.ok(text.endsWith('}\n'));
      assert.equal(JSON.parse(text).version, RUNTIME_VERSION);
      assert.deepEqual(parseRuntime(FILE, text, 'other-name'), data);
      // the text is stable across load/save cycles once written by this code
      const again = serializeRuntime(parseRuntime(FILE, text, 'web-1'));
      assert.equal(serializeRuntime(parseRuntime(FILE, again, 'web-1')), again);
      assert.deepEqual(JSON.parse(again), JSON.parse(text));
    });

    it('writes the keys of a version 2 file in a fixed order', () => {
      const shuffled = { block_devices: [], hvparams: {}, nics: [], kvm_cmd: ['-S'], instance: 'a', version: 2 } as RuntimeData;
      assert.deepEqual(Object.keys(JSON.parse(serializeRuntime(shuffled))), [
        'version', 'instance', 'kvm_cmd', 'nics', 'hvparams', 'block_devices',
      ]);
    });

    it('takes the instance name from the argument when a version 2 file has none', () => {
      const text = JSON.stringify({ version: 2, kvm_cmd: [] });
      assert.deepEqual(parseRuntime(FILE, text, 'web-2'), {
        version: 2, instance: 'web-2', kvm_cmd: [], nics: [], hvparams: {}, block_devices: [],
      });
    });

    it('rejects text that is not JSON, naming the file', () => {
      const err = runtimeError(() => parseRuntime(FILE, '[["-m"], [], {}', 'web-1'));
      assert.match(err.message, /^runtime file \/srv\/gnt\/web-1\/runtime\.json: not valid JSON \(/);
    });

    it('rejects a 5-entry list', () => {
      const err = runtimeError(() => parseRuntime(FILE, JSON.stringify([[], [], {}, [], []]), 'web-1'));
      assert.equal(err.message, `runtime file ${FILE}: a Ganeti-style list must have 3 or 4 entries, not 5`);
    });

    it('rejects a 2-entry list', () => {
      const err = runtimeError(() => parseRuntime(FILE, JSON.stringify([[], []]), 'web-1'));
      assert.equal(err.message, `runtime file ${FILE}: a Ganeti-style list must have 3 or 4 entries, not 2`);
    });

    it('rejects version 3', () => {
      const err = runtimeError(() => parseRuntime(FILE, JSON.stringify({ ...v2(), version: 3 }), 'web-1'));
      assert.equal(err.message, `runtime file ${FILE}: unsupported version 3 (this node reads 2)`);
    });

    it('rejects an object without a version', () => {
      const err = runtimeError(() => parseRuntime(FILE, JSON.stringify({ kvm_cmd: [] }), 'web-1'));
      assert.equal(err.message, `runtime file ${FILE}: unsupported version undefined (this node reads 2)`);
    });

    it('rejects a kvm_cmd that is not a list of strings, in both formats', () => {
      const expected = `runtime file ${FILE}: "kvm_cmd" is not a list of strings`;
      assert.equal(runtimeError(() => parseRuntime(FILE, JSON.stringify([['-m', 512], [], {}]), 'w')).message, expected);
      assert.equal(runtimeError(() => parseRuntime(FILE, JSON.stringify({ ...v2(), kvm_cmd: '-m 512' }), 'w')).message, expected);
      assert.equal(runtimeError(() => parseRuntime(FILE, JSON.stringify({ version: 2 }), 'w')).message, expected);
    });

    it('rejects JSON that is neither a list nor an object', () => {
      for (const text of ['null', '42', '"x"']) {
        const err = runtimeError(() => parseRuntime(FILE, text, 'w'));
        assert.equal(err.message, `runtime file ${FILE}: neither a version 2 object nor a Ganeti-style list`);
      }
    });

    it('rejects a NIC without mac, a disk without path, non-list nics and non-object hvparams', () => {
      assert.equal(
        runtimeError(() => parseRuntime(FILE, JSON.stringify([[], [{ uuid: 'x' }], {}]), 'w')).message,
        `runtime file ${FILE}: a NIC entry has no "mac"`,
      );
      assert.equal(
        runtimeError(() => parseRuntime(FILE, JSON.stringify([[], [], {}, [[{ uuid: 'x' }]]]), 'w')).message,
        `runtime file ${FILE}: a block device entry has no path`,
      );
      assert.equal(
        runtimeError(() => parseRuntime(FILE, JSON.stringify([[], {}, {}]), 'w')).message,
        `runtime file ${FILE}: "nics" is not a list`,
      );
      assert.equal(
        runtimeError(() => parseRuntime(FILE, JSON.stringify([[], [], []]), 'w')).message,
        `runtime file ${FILE}: "hvparams" is not an object`,
      );
    });
  });

  describe('files on disk', () => {
    let dir: string;
    let file: string;
    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-runtime-'));
      file = path.join(dir, 'runtime.json');
    });
    afterEach(() => {
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('loadRuntimeFile of a missing file says it does not exist', () => {
      const err = runtimeError(() => loadRuntimeFile(file, 'web-1'));
      assert.equal(err.message, `runtime file ${file}: does not exist (instance not created on this node?)`);
    });

    it('saveRuntimeFile writes mode 0600, leaves no temp file, and loads back', () => {
      saveRuntimeFile(file, v2());
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      assert.equal(fs.statSync(path.join(dir, 'runtime.journal')).mode & 0o777, 0o600);
      assert.deepEqual(fs.readdirSync(dir).sort(), SAVED);
      assert.deepEqual(withoutMark(file), asJson(v2()));
      assert.deepEqual(loadRuntimeFile(file, 'web-1'), v2());
    });

    it('saveRuntimeFile replaces an existing file and keeps it at mode 0600', () => {
      fs.writeFileSync(file, 'old', { mode: 0o644 });
      saveRuntimeFile(file, v2());
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      assert.deepEqual(fs.readdirSync(dir).sort(), SAVED);
      assert.deepEqual(loadRuntimeFile(file, 'web-1'), v2());
    });

    it('a 3-entry file is rewritten in the new format on the next save', () => {
      fs.writeFileSync(file, JSON.stringify([ganetiCmd, [ganetiNic], { acpi: true }]));
      const loaded = loadRuntimeFile(file, 'web-1');
      saveRuntimeFile(file, loaded);
      const text = fs.readFileSync(file, 'utf8');
      const raw = JSON.parse(text);
      assert.equal(raw.version, 2);
      assert.equal(raw.instance, 'web-1');
      assert.deepEqual(raw.kvm_cmd, ganetiCmd);
      assert.deepEqual(raw.block_devices, []);
      assert.match(text, /"block_devices": \[\]/);
      assert.deepEqual(raw.nics, [{ uuid: ganetiNic.uuid, mac: ganetiNic.mac, pci: 5, link: 'br0' }]);
      assert.deepEqual(loadRuntimeFile(file, 'web-1'), loaded);
    });

    it('calls beforeRename with the temp file, which holds the new content while the old file is unchanged', () => {
      saveRuntimeFile(file, v2());
      const oldText = fs.readFileSync(file, 'utf8');
      const next = { ...v2(), nics: [] };
      let seen: string | undefined;
      saveRuntimeFile(file, next, {
        beforeRename: (temp) => {
          seen = temp;
          assert.equal(path.dirname(temp), dir);
          assert.deepEqual(withoutMark(temp), asJson(next));
          assert.equal(fs.statSync(temp).mode & 0o777, 0o600);
          assert.equal(fs.readFileSync(file, 'utf8'), oldText);
        },
      });
      assert.ok(seen);
      assert.ok(!fs.existsSync(seen));
      assert.deepEqual(withoutMark(file), asJson(next));
    });

    it('a writer killed (SIGKILL) just before the rename leaves the previous file intact', function () {
      this.timeout(30000);
      const old = v2();
      saveRuntimeFile(file, old);
      const oldBytes = fs.readFileSync(file);

      const newData: RuntimeData = {
        ...v2(),
        nics: [{ uuid: 'n9', mac: '52:54:00:99:99:99', pci: 9 }],
        block_devices: [],
      };
      const modulePath = path.resolve(__dirname, '../../src/hypervisor/runtime-file.js');
      assert.ok(fs.existsSync(modulePath), `${modulePath} is built`);
      const script = `
        const rf = require(${JSON.stringify(modulePath)});
        const data = JSON.parse(process.env.GNT_TEST_DATA);
        rf.saveRuntimeFile(process.env.GNT_TEST_FILE, data, {
          beforeRename: () => process.kill(process.pid, 'SIGKILL'),
        });
        process.stdout.write('rename happened\\n');
      `;
      const child = spawnSync(process.execPath, ['-e', script], {
        env: { ...process.env, GNT_TEST_FILE: file, GNT_TEST_DATA: JSON.stringify(newData) },
        encoding: 'utf8',
        timeout: 20000,
      });
      assert.equal(child.error, undefined);
      assert.equal(child.signal, 'SIGKILL', `child stderr: ${child.stderr}`);
      assert.equal(child.status, null);
      assert.equal(child.stdout, '');

      // The old file, byte for byte.
      assert.deepEqual(fs.readFileSync(file), oldBytes);
      assert.deepEqual(loadRuntimeFile(file, 'web-1'), old);

      // The killed writer left its durable temp file with the new content behind.
      const leftovers = fs.readdirSync(dir).filter((n) => !SAVED.includes(n));
      assert.equal(leftovers.length, 1);
      assert.match(leftovers[0], /^\.runtime\.json\.tmp-\d+$/);
      assert.deepEqual(withoutMark(path.join(dir, leftovers[0])), asJson(newData));

      // A following normal save succeeds and is what loads next.
      saveRuntimeFile(file, newData);
      assert.deepEqual(loadRuntimeFile(file, 'web-1'), newData);
      assert.deepEqual(withoutMark(file), asJson(newData));
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      // and no temp file of this process is left
      assert.ok(!fs.existsSync(path.join(dir, `.runtime.json.tmp-${process.pid}`)));
    });

    it('a save when a stale temp file of this very process exists still writes the new content', () => {
      const temp = path.join(dir, `.runtime.json.tmp-${process.pid}`);
      fs.writeFileSync(temp, 'garbage from an earlier crash that is much longer than nothing'.repeat(100));
      saveRuntimeFile(file, v2());
      assert.deepEqual(withoutMark(file), asJson(v2()));
      assert.deepEqual(fs.readdirSync(dir).sort(), SAVED);
    });
  });
});
