import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GuestConsole, countCpuList, parseGuestStates, type GuestState } from '../../src/hypervisor/guest-console';

const block = (n: number, body: string[]): string =>
  [`gnt-guest begin ${n}`, ...body, `gnt-guest end ${n}`, `gnt-guest tick ${n}`].join('\n') + '\n';

const BODY_3 = [
  'pci 0000:00:05.0 1af4:1000 0x020000',
  'net eth0 52:54:00:aa:bb:cc 0000:00:05.0 4 0',
  'blk vda 131072 0000:00:06.0 -',
  'blk sda 2048 - 0:0:0:5',
  'cpu present=0-1 online=0-1',
  'mem 156548',
];

const STATE_3: GuestState = {
  seq: 3,
  pci: [{ addr: '0000:00:05.0', vendorDevice: '1af4:1000', cls: '0x020000' }],
  nets: [{ name: 'eth0', mac: '52:54:00:aa:bb:cc', pci: '0000:00:05.0', queues: 4, carrier: '0' }],
  blks: [
    { name: 'vda', sectors: 131072, pci: '0000:00:06.0', scsi: '-' },
    { name: 'sda', sectors: 2048, pci: '-', scsi: '0:0:0:5' },
  ],
  cpusPresent: '0-1',
  cpusOnline: '0-1',
  memTotalKiB: 156548,
};

const BODY_7 = [
  'pci 0000:00:00.0 8086:1237 0x060000',
  'pci 0000:00:05.0 1af4:1000 0x020000',
  'pci 0000:00:07.0 1af4:1000 0x020000',
  'net eth0 52:54:00:aa:bb:cc 0000:00:05.0',
  'net eth1 52:54:00:aa:bb:dd 0000:00:07.0',
  'net lo 00:00:00:00:00:00',
  'cpu present=0-3 online=0-1,3',
  'mem 287620',
];

const STATE_7: GuestState = {
  seq: 7,
  pci: [
    { addr: '0000:00:00.0', vendorDevice: '8086:1237', cls: '0x060000' },
    { addr: '0000:00:05.0', vendorDevice: '1af4:1000', cls: '0x020000' },
    { addr: '0000:00:07.0', vendorDevice: '1af4:1000', cls: '0x020000' },
  ],
  nets: [
    { name: 'eth0', mac: '52:54:00:aa:bb:cc', pci: '0000:00:05.0', queues: 0, carrier: '-' },
    { name: 'eth1', mac: '52:54:00:aa:bb:dd', pci: '0000:00:07.0', queues: 0, carrier: '-' },
    { name: 'lo', mac: '00:00:00:00:00:00', pci: '-', queues: 0, carrier: '-' },
  ],
  blks: [],
  cpusPresent: '0-3',
  cpusOnline: '0-1,3',
  memTotalKiB: 287620,
};

describe('guest-console', () => {
  describe('parseGuestStates', () => {
    it('reads complete blocks among kernel noise and ignores a partial block at the end', () => {
      const text = [
        '[    0.000000] Linux version 6.12.0 (gcc) #1 SMP PREEMPT_DYNAMIC',
        '[    0.412345] virtio_net virtio0 eth0: renamed from eth0',
        'gnt-guest init: 6.12.0',
        'gnt-guest begin 3',
        ...BODY_3,
        'gnt-guest end 3',
        'gnt-guest tick 3',
        'gnt-guest tick 4',
        '[   12.100001] pci 0000:00:07.0: [1af4:1000] type 00 class 0x020000 conventional PCI endpoint',
        '[   12.100200] pci 0000:00:07.0: BAR 0 [io  0x0000-0x001f]',
        'gnt-guest begin 7',
        ...BODY_7.slice(0, 3),
        '[   12.300000] virtio-pci 0000:00:07.0: enabling device (0000 -> 0003)',
        ...BODY_7.slice(3),
        'gnt-guest end 7',
        'gnt-guest tick 7',
        'gnt-guest begin 9',
        'pci 0000:00:05.0 1af4:1000 0x020000',
        'mem 1',
      ].join('\n');
      assert.deepEqual(parseGuestStates(text), [STATE_3, STATE_7]);
    });

    it('reads CRLF text the same', () => {
      const text = block(3, BODY_3).replace(/\n/g, '\r\n');
      assert.deepEqual(parseGuestStates(text), [STATE_3]);
    });

    it('returns nothing for text without a complete block', () => {
      assert.deepEqual(parseGuestStates(''), []);
      assert.deepEqual(parseGuestStates('gnt-guest tick 1\n'), []);
      assert.deepEqual(parseGuestStates(['gnt-guest begin 1', ...BODY_3].join('\n')), []);
      // an end without a begin is not a block
      assert.deepEqual(parseGuestStates([...BODY_3, 'gnt-guest end 1'].join('\n')), []);
    });

    it('starts over when a new begin comes before the end of the previous block', () => {
      const text = ['gnt-guest begin 1', 'mem 5', 'gnt-guest begin 2', 'mem 6', 'gnt-guest end 2'].join('\n');
      assert.deepEqual(parseGuestStates(text), [
        { seq: 2, pci: [], nets: [], blks: [], cpusPresent: '', cpusOnline: '', memTotalKiB: 6 },
      ]);
    });

    it('reads an empty block as an empty state', () => {
      assert.deepEqual(parseGuestStates('gnt-guest begin 0\ngnt-guest end 0\n'), [
        { seq: 0, pci: [], nets: [], blks: [], cpusPresent: '', cpusOnline: '', memTotalKiB: 0 },
      ]);
    });
  });

  describe('countCpuList', () => {
    it('counts sysfs CPU lists', () => {
      assert.equal(countCpuList('0'), 1);
      assert.equal(countCpuList('0-2'), 3);
      assert.equal(countCpuList('0-1,3'), 3);
      assert.equal(countCpuList(''), 0);
      assert.equal(countCpuList('0-3,8-11,15'), 9);
    });
  });

  describe('GuestConsole', () => {
    let dir: string;
    let file: string;
    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-console-'));
      file = path.join(dir, 'console.log');
    });
    afterEach(() => {
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('returns undefined while the file does not exist or holds no block', () => {
      const con = new GuestConsole(file);
      assert.equal(con.poll(), undefined);
      assert.equal(con.lastTick, -1);
      fs.writeFileSync(file, '[    0.000000] Linux version 6.12.0\ngnt-guest init: 6.12.0\n');
      assert.equal(con.poll(), undefined);
      assert.equal(con.latest, undefined);
    });

    it('follows appends: a first block, then a later one', () => {
      const con = new GuestConsole(file);
      fs.writeFileSync(file, '[    0.1] boot noise\n' + block(3, BODY_3));
      assert.deepEqual(con.poll(), STATE_3);
      assert.equal(con.lastTick, 3);
      fs.appendFileSync(file, 'gnt-guest tick 4\ngnt-guest tick 5\n');
      assert.deepEqual(con.poll(), STATE_3);
      assert.equal(con.lastTick, 5);
      fs.appendFileSync(file, block(7, BODY_7));
      assert.deepEqual(con.latest, STATE_7);
      assert.equal(con.lastTick, 7);
    });

    it('waits for the rest of a line cut in the middle', () => {
      const con = new GuestConsole(file);
      const text = block(3, BODY_3);
      const cut = text.indexOf('gnt-guest end 3') + 'gnt-guest e'.length;
      fs.writeFileSync(file, text.slice(0, cut));
      assert.equal(con.poll(), undefined);
      fs.appendFileSync(file, text.slice(cut));
      assert.deepEqual(con.poll(), STATE_3);
    });

    it('reads a block split across two appends, polled in between', () => {
      const con = new GuestConsole(file);
      fs.writeFileSync(file, block(3, BODY_3));
      assert.deepEqual(con.poll(), STATE_3);
      const text = block(7, BODY_7);
      const cut = text.indexOf('net eth1'); // after complete lines of the block
      fs.appendFileSync(file, text.slice(0, cut));
      assert.deepEqual(con.poll(), STATE_3, 'an unfinished block is not the latest state yet');
      fs.appendFileSync(file, text.slice(cut));
      assert.deepEqual(con.poll(), STATE_7);
    });

    it('reads a block split in the middle of a line across two appends, polled in between', () => {
      const con = new GuestConsole(file);
      const text = block(3, BODY_3);
      const cut = text.indexOf('52:54:00:aa') + 5;
      fs.writeFileSync(file, text.slice(0, cut));
      assert.equal(con.poll(), undefined);
      fs.appendFileSync(file, text.slice(cut));
      assert.deepEqual(con.poll(), STATE_3);
    });

    it('starts from the beginning when the file is replaced by a shorter one', () => {
      const con = new GuestConsole(file);
      fs.writeFileSync(file, 'x'.repeat(4000) + '\n' + block(3, BODY_3));
      assert.deepEqual(con.poll(), STATE_3);
      fs.writeFileSync(file, block(7, BODY_7));
      assert.deepEqual(con.poll(), STATE_7);
    });

    it('waitFor resolves once an appended block satisfies the predicate', async () => {
      const con = new GuestConsole(file);
      fs.writeFileSync(file, block(3, BODY_3));
      const timer = setTimeout(() => fs.appendFileSync(file, block(7, BODY_7)), 250);
      try {
        const started = Date.now();
        const s = await con.waitFor((st) => st.nets.some((n) => n.mac === '52:54:00:aa:bb:dd'), 5000, 'eth1');
        assert.deepEqual(s, STATE_7);
        assert.ok(Date.now() - started >= 200, 'it really waited for the append');
      } finally {
        clearTimeout(timer);
      }
    });

    it('waitFor resolves at once when the current state already satisfies the predicate', async () => {
      const con = new GuestConsole(file);
      fs.writeFileSync(file, block(3, BODY_3));
      assert.deepEqual(await con.waitFor((s) => s.memTotalKiB === 156548, 1000, 'memory'), STATE_3);
    });

    it('waitFor times out with an error that shows the last state', async () => {
      const con = new GuestConsole(file);
      fs.writeFileSync(file, block(3, BODY_3));
      const started = Date.now();
      await assert.rejects(
        con.waitFor((s) => s.nets.length === 2, 300, 'two NICs'),
        (err: unknown) => {
          assert.ok(err instanceof Error);
          assert.equal(
            err.message,
            `guest console ${file}: no state with two NICs within 300 ms; last state: ${JSON.stringify(STATE_3)}`,
          );
          return true;
        },
      );
      const took = Date.now() - started;
      assert.ok(took >= 300 && took < 3000, `took ${took} ms`);
    });

    it('waitFor times out showing "undefined" when no state was ever seen', async () => {
      const con = new GuestConsole(file);
      await assert.rejects(con.waitFor(() => true, 150, 'anything'), {
        message: `guest console ${file}: no state with anything within 150 ms; last state: undefined`,
      });
    });
  });
});
