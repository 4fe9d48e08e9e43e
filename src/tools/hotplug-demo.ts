/**
 * The main job for now: boot the test guest under the hypervisor layer,
 * hot-add and remove a NIC (on a bridge) and a disk, and print at each step
 * what the guest itself reports on its serial console.
 * Run inside a private network namespace (scripts/demo.sh does).
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GuestConsole, countCpuList, type GuestState } from '../hypervisor/guest-console';
import { KvmInstance } from '../hypervisor/kvm-instance';

const REPO = path.resolve(__dirname, '../../..');
const BRIDGE = 'gntdemo0';
const MAC = '52:54:00:de:00:01';
const DISK_MIB = 64;

function describe(s: GuestState): string {
  const nets = s.nets.map((n) => `${n.name} ${n.mac} @${n.pci}`).join(', ') || 'none';
  const disks = s.blks.map((b) => `${b.name} ${(b.sectors * 512) / 2 ** 20} MiB @${b.pci}`).join(', ') || 'none';
  return `NICs: ${nets} | disks: ${disks} | CPUs: ${countCpuList(s.cpusOnline)} | MemTotal: ${s.memTotalKiB} kB`;
}

async function step<T>(title: string, action: () => Promise<T>): Promise<T> {
  const started = process.hrtime.bigint();
  const result = await action();
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  console.log(`\n== ${title} (${ms.toFixed(1)} ms)`);
  return result;
}

async function main(): Promise<void> {
  if (process.env.GNT_IN_TEST_NETNS !== '1') throw new Error('run through scripts/demo.sh (needs a private network namespace)');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-demo-'));
  const guest = path.join(REPO, '.cache/guest');
  execFileSync('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
  const instance = KvmInstance.create(dataDir, {
    name: 'demo1',
    memoryMiB: 256,
    maxMemoryMiB: 1024,
    vcpus: 1,
    maxVcpus: 4,
    kernel: path.join(guest, 'vmlinuz'),
    initrd: path.join(guest, 'initrd.gz'),
    kernelArgs: 'console=ttyS0 quiet loglevel=1 panic=-1',
  });
  const con = new GuestConsole(instance.paths.consoleLog);
  const show = async (what: string, ok: (s: GuestState) => boolean): Promise<void> => {
    const s = await con.waitFor(ok, 60_000, what);
    console.log(`   guest sees -> ${describe(s)}`);
  };
  try {
    const pid = await step('start instance demo1 (QEMU under TCG)', () => instance.start());
    console.log(`   QEMU pid ${pid}, runtime file ${instance.paths.runtimeFile}`);
    await show('boot', () => true);

    const nic = await step(`hot-add NIC ${MAC} on bridge ${BRIDGE}`, () =>
      instance.hotAddNic({ uuid: randomUUID(), mac: MAC, link: BRIDGE }),
    );
    console.log(`   PCI slot ${nic.pci}, tap ${nic.tap}`);
    await show('the NIC', (s) => s.nets.some((n) => n.mac === MAC));

    const diskPath = path.join(dataDir, 'disk1.img');
    fs.writeFileSync(diskPath, '');
    fs.truncateSync(diskPath, DISK_MIB * 2 ** 20);
    const disk = await step(`hot-add a ${DISK_MIB} MiB disk`, () => instance.hotAddDisk({ uuid: randomUUID(), path: diskPath }));
    console.log(`   PCI slot ${disk.pci}`);
    await show('the disk', (s) => s.blks.some((b) => b.sectors === DISK_MIB * 2048));

    await step('hot-remove the NIC', () => instance.hotRemoveNic(nic.uuid));
    await show('no NIC', (s) => !s.nets.some((n) => n.mac === MAC));
    await step('hot-remove the disk', () => instance.hotRemoveDisk(disk.uuid));
    await show('no disk', (s) => s.blks.length === 0);
    console.log('\nhotplug demo finished: every change above was seen by the guest itself');
  } finally {
    await instance.stop().catch(() => undefined);
    execFileSync('ip', ['link', 'del', BRIDGE]);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
