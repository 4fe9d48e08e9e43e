/**
 * RunJob (issue 14): submit and stream a job in one call, against a real
 * MasterDaemon (in this process, so that its watchers can be counted), a
 * real gnt-noded with the test guest, and the CLI as child processes. The
 * stream starts with the job id, carries every log line of the job exactly
 * once and in order, and ends with the finished job; a client killed with
 * SIGKILL leaves no watcher behind and the job runs on to its end.
 */
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { ClusterDir } from '../../src/master/cluster-dir';
import { MasterDaemon } from '../../src/master/server';
import { connectMaster, submitAndWatch } from '../../src/master/cli/client';
import type { MasterClient } from '../../src/generated/gnt/master/v1/Master';
import type { JobEvent__Output } from '../../src/generated/gnt/master/v1/JobEvent';
import type { SubmitJobRequest } from '../../src/generated/gnt/master/v1/SubmitJobRequest';
import { CLI_MAIN, NODED_MAIN, startDaemon, stopDaemon, TestCluster, type Daemon } from '../support/cli-cluster';
import { freePort } from '../support/noded';
import { GUEST_DIR, guestFiles } from '../support/guest';

const NAME = 'rj1';

/** Every event of one RunJob stream, and how it ended. */
function runJobEvents(client: MasterClient, req: SubmitJobRequest): Promise<{ events: JobEvent__Output[]; error?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    const events: JobEvent__Output[] = [];
    const s = client.RunJob(req);
    s.on('data', (e: JobEvent__Output) => events.push(e));
    s.on('error', (error: grpc.ServiceError) => resolve({ events, error }));
    s.on('end', () => resolve({ events }));
  });
}

const waitFor = async (what: string, pred: () => boolean, timeoutMs = 30_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('RunJob: submit and stream a job in one call (in-process master, real gnt-noded and guest)', function () {
  this.timeout(300_000);
  const c = new TestCluster();
  let master: MasterDaemon;
  let noded: Daemon | undefined;
  let api: { client: MasterClient; address: string };
  const sink = { write: () => true } as unknown as NodeJS.WritableStream;

  before(async function () {
    let guest: { kernel: string; initrd: string };
    try {
      guest = guestFiles();
    } catch (err) {
      console.log(`      (skipped: ${(err as Error).message})`);
      this.skip();
    }
    // only commands that do not talk to the master run synchronously: the master is in this process
    c.ok(c.gnt('gnt-cluster', 'init', '--master-address', `127.0.0.1:${await freePort()}`, '--name', 'rj'));
    const dir = new ClusterDir(c.clusterDir);
    master = new MasterDaemon({ clusterDir: dir });
    await master.reconcile();
    await master.startConvergence();
    await master.listen();
    const certs = path.join(c.work, 'node1-certs');
    c.ok(c.gnt('gnt-cluster', 'issue-node-cert', 'node1', '--out', certs));
    const port = await freePort();
    const data = c.dir('node1-data');
    const storage = c.dir('node1-storage');
    noded = await startDaemon(
      [NODED_MAIN, '--name', 'node1', '--listen', `127.0.0.1:${port}`, '--data-dir', data, '--storage-dir', storage, '--image-dir', GUEST_DIR,
        '--ca', path.join(certs, 'ca.pem'), '--cert', path.join(certs, 'node.pem'), '--key', path.join(certs, 'node.key')],
      /gnt-noded node1 listening on/, path.join(c.work, 'node1.log'),
    );
    api = connectMaster(dir);
    const node = await submitAndWatch(api.client, api.address, { nodeAdd: { name: 'node1', address: `127.0.0.1:${port}` } }, sink);
    assert.equal(node.status, 'success', node.error);
    const add = await submitAndWatch(api.client, api.address, {
      instanceAdd: {
        name: NAME, node: 'node1', vcpus: 1, memoryMib: 256, kernel: guest.kernel, initrd: guest.initrd,
        kernelArgs: 'console=ttyS0 quiet loglevel=1 panic=-1', disks: [{ sizeBytes: 16 << 20 }], nics: [],
      },
    }, sink);
    assert.equal(add.status, 'success', add.error);
  });

  after(async function () {
    this.timeout(60_000);
    if (noded && noded.child.exitCode === null) noded.child.kill('SIGCONT');
    if (api) await submitAndWatch(api.client, api.address, { instanceRemove: { name: NAME } }, sink).catch(() => undefined);
    api?.client.close();
    await master?.close();
    await stopDaemon(noded);
    await c.destroy();
  });

  it('streams the job id first, then every log line once and in order, then done; the same lines as the job in the database', async () => {
    const { events, error } = await runJobEvents(api.client, { instanceModify: { name: NAME, nics: [{ action: 'ADD' }], hotplug: 'HOTPLUG' } });
    assert.equal(error, undefined);
    assert.equal(events[0].event, 'submittedJobId');
    const id = Number(events[0].submittedJobId);
    const last = events[events.length - 1];
    assert.equal(last.event, 'done');
    assert.equal(last.done!.status, 'success', last.done!.error);
    assert.equal(Number(last.done!.id), id);
    const lines = events.slice(1, -1);
    assert.ok(lines.every((e) => e.event === 'line'));
    const inDb = master.jobs.logs(id);
    assert.deepEqual(lines.map((e) => [Number(e.line!.seq), e.line!.time, e.line!.message]), inDb.map((l) => [l.seq, l.time, l.message]));
    assert.deepEqual(inDb.map((l) => l.message).slice(1, 3), ['started', inDb[2].message]);
    // The first line names who asked (docs/audit.md): this client's certificate.
    assert.match(inDb[0].message, new RegExp(`^submitted: modify instance ${NAME}; requested by (cli|master) certificate [0-9A-F:]{95}$`));
    assert.match(inDb[2].message, /^hot-add of new NIC .* on node node1 \(operation [0-9a-f-]{36}\)$/);
    assert.equal(inDb[inDb.length - 1].message, 'finished: success');
    assert.equal(master.queue.watchers(id), 0, 'the stream ended: no listener is left');
    assert.equal(master.config.getInstance(NAME).nics.length, 1);
  });

  it('the CLI (gnt-instance modify) prints the lines RunJob streams and exits 0; a failing job exits 1 with its error', async () => {
    const ok = await c.gntAsync('gnt-instance', 'modify', '--hotplug', '--net', '0:remove', NAME);
    assert.equal(ok.code, 0, ok.stderr);
    const job = master.jobs.list().pop()!;
    const printed = ok.stdout.trimEnd().split('\n').map((l) => l.replace(/^\S+ \S+ /, ''));
    assert.deepEqual(printed, master.jobs.logs(job.id).map((l) => l.message));
    const bad = await c.gntAsync('gnt-instance', 'modify', '--hotplug', '--net', '5:remove', NAME);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^Failure: job \d+ failed: /m);
  });

  it('a request that fails the submit checks is refused with its status and submits nothing', async () => {
    const jobs = master.jobs.list().length;
    const { events, error } = await runJobEvents(api.client, { instanceModify: { name: NAME, nics: [{ action: 'ADD', mac: 'zz:zz' }], hotplug: 'HOTPLUG' } });
    assert.equal(events.length, 0);
    assert.equal(error?.code, 3 /* INVALID_ARGUMENT */, error?.details);
    assert.equal(master.jobs.list().length, jobs);
  });

  it('a client killed (SIGKILL) while its job waits for the node leaves no watcher behind; the job runs on to success', async function () {
    assert.ok(noded?.child.pid);
    const before = master.jobs.list().length;
    const nics = master.config.getInstance(NAME).nics.length;
    // the node is stopped (by its pid, a process this test started): the job's HotplugDevice waits for it
    noded.child.kill('SIGSTOP');
    let cli: ReturnType<typeof spawn> | undefined;
    try {
      cli = spawn(process.execPath, [CLI_MAIN, 'gnt-instance', 'modify', '--hotplug', '--net', 'add', NAME, '--cluster-dir', c.clusterDir], { stdio: 'ignore' });
      const exited = new Promise((r) => cli!.once('exit', r));
      await waitFor('the CLI\'s job to run with its stream open', () => {
        const j = master.jobs.list().slice(before)[0];
        return !!j && j.status === 'running' && master.queue.watchers(j.id) > 0 && master.jobs.logs(j.id).some((l) => /^hot-add/.test(l.message));
      });
      const job = master.jobs.list().slice(before)[0];
      cli.kill('SIGKILL');
      await exited;
      await waitFor('the watcher of the killed client to go', () => master.queue.watchers(job.id) === 0, 10_000);
      assert.equal(master.jobs.get(job.id)!.status, 'running', 'the stream ended because the client went, not because the job did');
      noded.child.kill('SIGCONT');
      await waitFor('the job to end', () => master.jobs.get(job.id)!.status !== 'running', 120_000);
      assert.equal(master.jobs.get(job.id)!.status, 'success', master.jobs.get(job.id)!.error);
      assert.equal(master.config.getInstance(NAME).nics.length, nics + 1, 'the NIC was added once');
      // gnt-job watch picks the finished job up again, with every line
      const w = await c.gntAsync('gnt-job', 'watch', String(job.id));
      assert.equal(w.code, 0, w.stderr);
      assert.match(w.stdout, /finished: success/);
    } finally {
      noded.child.kill('SIGCONT');
      if (cli && cli.exitCode === null && cli.signalCode === null) cli.kill('SIGKILL');
    }
  });
});
