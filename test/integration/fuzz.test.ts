/**
 * Property test of hostile input (issue 11): random, mutated and malformed
 * requests over every RPC of gnt-noded and gnt-masterd (read from the .proto
 * files), and random command lines for the CLI, against real daemons with a
 * booted guest each. Every reply must be a proper gRPC status within its
 * bound, no daemon may die, no channel may hang, and afterwards the runtime
 * files and the configuration are valid, no file appeared outside the
 * directories the daemons own, and no tap leaked.
 *
 * GNT_FUZZ_SEED=n replays a run (the seed is printed); GNT_FUZZ_FULL=1 runs
 * ten times as many requests. See docs/testing.md, "Fuzzing hostile input".
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { ClusterDir } from '../../src/master/cluster-dir';
import { REPO } from '../support/guest';
import { argvArbitrary, cliProblem, describeArgv, runCliBounded } from '../support/fuzz-cli';
import { RawChannel } from '../support/fuzz-client';
import { checkRuntimeFiles, diffDigests, digestTree, newPathsOutside, snapshotPaths, taps, type WatchedRoot } from '../support/fuzz-fs';
import { serviceMethods } from '../support/fuzz-proto';
import { formatFailures, fuzzMethod, methodSeed, type FuzzTarget, type MethodFailure, type MethodStats } from '../support/fuzz-runner';
import { deleteBridge, hostileStrings, makeBridge, MasterWorld, M_MAIN, MAIN, NodeWorld } from '../support/fuzz-world';

const FULL = process.env.GNT_FUZZ_FULL === '1';
const SEED = process.env.GNT_FUZZ_SEED ? Number(process.env.GNT_FUZZ_SEED) : (Math.random() * 2 ** 31) | 0;
/** gRPC requests per method (30 methods today: 2,100 in CI, 21,000 with GNT_FUZZ_FULL=1). */
const RUNS_PER_METHOD = FULL ? 700 : 70;
const CLI_RUNS = FULL ? 2_000 : 200;
/** Time one method may take; a daemon whose calls hang runs out of it (reported) instead of stalling the run. */
const METHOD_BUDGET_MS = Number(process.env.GNT_FUZZ_BUDGET_MS ?? (FULL ? 10 : 1) * 25_000);
/** For local work: only the methods (and CLI programs) whose name matches. */
const ONLY = process.env.GNT_FUZZ_ONLY ? new RegExp(process.env.GNT_FUZZ_ONLY) : undefined;
const CLI_BOUND_MS = 60_000;
const CLI_PARALLEL = 2;

/** Node methods that legitimately wait longer than 2 s (boot, guest unplug acknowledgement, QEMU shutdown, verify queue). */
const NODE_LONG_POLL = new Set(['InstanceStart', 'InstanceStop', 'InstanceRemove', 'InstanceRelease', 'HotplugDevice', 'InstanceResize',
  'InstanceReceive', 'InstanceVerify', 'MigrationAbort', 'MigrationFinish', 'GuestWait']);
/** New /tmp entries that would come from our requests (decoy and target names) or from a daemon's own files. */
const SUSPICIOUS_TMP = /fz|fuzz|pwned|decoy|\.img$|mig|sock|runtime|qemu|qmp|console|\.pid$|\.key$|\.pem$|tap|x,|=/i;
const MKDTEMP = /^gnt-[a-z-]+-[A-Za-z0-9]{6}$/;
/** Master methods that wait: the stream of a running job, and a verification job that answers when it has finished. */
const MASTER_LONG_POLL = new Set(['WatchJob', 'RunJob', 'Verify']);

describe('fuzzing hostile input: every RPC of gnt-noded and gnt-masterd, and the CLI', function () {
  this.timeout(FULL ? 4 * 3600_000 : 900_000);
  const nodeMethods = serviceMethods('node.proto', 'gnt.node.v1.NodeDaemon');
  const masterMethods = serviceMethods('master.proto', 'gnt.master.v1.Master');
  const nw = new NodeWorld();
  const mw = new MasterWorld();
  const stats: Record<string, MethodStats> = {};
  let nodeTarget: FuzzTarget;
  let masterTarget: FuzzTarget;
  let roots: WatchedRoot[];
  let pathsBefore: Set<string>;
  let decoysBefore: Map<string, string>;

  before(async function () {
    this.timeout(300_000);
    console.log(`      fuzz seed: ${SEED} (replay with GNT_FUZZ_SEED=${SEED})${FULL ? ', full run' : ''}`);
    makeBridge();
    await Promise.all([nw.start(), mw.start()]);
    nodeTarget = {
      label: 'gnt-noded',
      channel: new RawChannel(nw.noded.address, nw.pki.client, 'localhost'),
      healthPath: '/gnt.node.v1.NodeDaemon/NodeInfo',
      longPoll: NODE_LONG_POLL,
      alive: () => nw.alive(),
      logTail: () => nw.noded.log(),
      revive: () => nw.spawn(),
    };
    masterTarget = {
      label: 'gnt-masterd',
      channel: new RawChannel(mw.masterAddress, mw.cliIdentity, 'localhost'),
      healthPath: '/gnt.master.v1.Master/ListNodes',
      longPoll: MASTER_LONG_POLL,
      alive: () => mw.masterAlive() && mw.nodeAlive(),
      logTail: () => `${mw.c.masterDaemon?.stderr() ?? ''}\n${mw.c.node('node1').daemon.stderr()}`,
      revive: () => mw.revive(),
    };
    const tmp = os.tmpdir();
    roots = [
      { dir: nw.root },
      { dir: REPO, ignore: (_p, name) => name === 'node_modules' || name === '.git' },
      // /tmp is shared with every other process on the machine: only names a daemon could have taken from our requests
      // count, not the mkdtemp directories of tests (gnt-PREFIX-XXXXXX; the daemons never make any).
      { dir: tmp, topLevelOnly: true, ignore: (p, name) => p !== nw.decoys.tmp && (MKDTEMP.test(name) || !SUSPICIOUS_TMP.test(name)) },
      { dir: '/', topLevelOnly: true },
    ];
    pathsBefore = snapshotPaths(roots);
    decoysBefore = new Map([...digestTree(nw.decoys.near), ...digestTree(nw.decoys.tmp)]);
  });

  after(async function () {
    this.timeout(120_000);
    const lines = Object.entries(stats).map(([m, s]) => `${m}: ${s.requests} ${JSON.stringify(s.codes)}`);
    const total = Object.values(stats).reduce((n, s) => n + s.requests, 0);
    console.log(`      fuzz seed ${SEED}: ${total} gRPC requests\n${lines.map((l) => `        ${l}`).join('\n')}`);
    nodeTarget?.channel.close();
    masterTarget?.channel.close();
    await nw.destroy();
    await mw.destroy();
    deleteBridge();
  });

  async function fuzzService(t: FuzzTarget, methods: ReturnType<typeof serviceMethods>, ctx: ReturnType<NodeWorld['context']>): Promise<void> {
    const failures: MethodFailure[] = [];
    for (const m of methods.filter((x) => !ONLY || ONLY.test(x.name))) {
      const s = (stats[`${t.label} ${m.name}`] = { requests: 0, codes: {} });
      const t0 = Date.now();
      const found = await fuzzMethod(t, m, ctx, RUNS_PER_METHOD, methodSeed(SEED, m.name), s, METHOD_BUDGET_MS);
      failures.push(...found);
      if (process.env.GNT_FUZZ_VERBOSE === '1') console.log(`        ${m.name}: ${s.requests} requests, ${Date.now() - t0} ms, ${found.length} kinds of failure`);
    }
    assert.equal(failures.length, 0, `${failures.length} kinds of failure (seed ${SEED}):\n${formatFailures(failures)}`);
  }

  it('every NodeDaemon RPC answers each request with a proper status in time, and the daemon and the channel survive', async () => {
    assert.ok(nodeMethods.length >= 19, `NodeDaemon methods read from node.proto: ${nodeMethods.map((m) => m.name).join(', ')}`);
    await fuzzService(nodeTarget, nodeMethods, nw.context());
  });

  it('every Master RPC answers each request with a proper status in time, and the daemons and the channel survive', async () => {
    assert.ok(masterMethods.length >= 10, `Master methods read from master.proto: ${masterMethods.map((m) => m.name).join(', ')}`);
    await fuzzService(masterTarget, masterMethods, mw.context(nw.decoys));
  });

  it('random CLI arguments end with exit code 0, 1 or 2, a one-line failure and no stack trace', async () => {
    const values = [M_MAIN, 'fzm-victim', 'node1', 'node2', '1', '2', '3', '999999', '-1', 'json', 'table', 'add', '0:remove',
      'add:mac=52:54:00:f4:00:01,link=gntfzbr0', 'add:size=16M', '0:mac=52:54:00:f4:00:02', 'size=8M', 'vcpus=2,memory=384M',
      'security_model=user', 'chroot=/', `chroot=${nw.decoys.near}`, '256M', '1G', '99999999T', '127.0.0.1:1', mw.nodeAddress,
      path.join(mw.c.work, 'fz-certs'), 'link=gntfzbr0', 'mac=ff:ff:ff:ff:ff:ff', '5'];
    const hostile = hostileStrings(nw.decoys, false);
    const argvs = fc.sample(argvArbitrary({ values, hostile, protectedNames: [M_MAIN, 'node1'] }), { seed: SEED, numRuns: CLI_RUNS });
    const problems: string[] = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < argvs.length) {
        const argv = argvs[next++];
        const o = await runCliBounded(mw.c.clusterDir, argv, CLI_BOUND_MS);
        const p = cliProblem(o);
        if (p) problems.push(`${describeArgv(argv)}: ${p}; stderr: ${JSON.stringify(o.stderr.slice(0, 300))}`);
      }
    };
    await Promise.all(Array.from({ length: CLI_PARALLEL }, worker));
    const names = mw.instances();
    assert.ok(Array.isArray(names) && names.includes(M_MAIN), `the configuration after the CLI runs: ${String(names)}`);
    assert.deepEqual(problems, [], `${problems.length} of ${argvs.length} command lines (seed ${SEED}):\n${problems.slice(0, 30).join('\n')}`);
  });

  it('leaves valid runtime files and configuration, no file outside the daemons\u2019 directories, and no leaked tap', async () => {
    const problems: string[] = [];
    for (const [what, alive] of [['gnt-noded', nw.alive()], ['gnt-masterd', mw.masterAlive()], ['cluster gnt-noded', mw.nodeAlive()]] as const)
      if (!alive) problems.push(`${what} is not running at the end`);
    const nodeDirs = [nw.dataDir, mw.c.node('node1').dataDir];
    const owned: string[] = [];
    for (const dir of nodeDirs) {
      const r = checkRuntimeFiles(dir);
      owned.push(...r.ownedTaps);
      for (const [name, err] of Object.entries(r.broken)) problems.push(`${dir}: runtime file of ${name} does not load: ${err}`);
      for (const name of r.orphanDirs) problems.push(`${dir}/${name}: an instance directory without a runtime file`);
    }
    if (!checkRuntimeFiles(nw.dataDir).instances.includes(MAIN)) problems.push(`${MAIN} lost its runtime file`);

    const db = new Database(new ClusterDir(mw.c.clusterDir).dbFile, { readonly: true, fileMustExist: true });
    try {
      const rows = db.prepare('PRAGMA integrity_check').all() as Array<{ integrity_check: string }>;
      if (rows.map((r) => r.integrity_check).join(',') !== 'ok') problems.push(`config.db integrity_check: ${JSON.stringify(rows)}`);
    } finally {
      db.close();
    }
    const names = mw.instances();
    if (!Array.isArray(names)) problems.push(names);
    else if (!names.includes(M_MAIN)) problems.push(`${M_MAIN} is gone from the configuration: ${names.join(', ')}`);
    for (const argv of [['gnt-node', 'list', '--output', 'json'], ['gnt-job', 'list', '--output', 'json'], ['gnt-cluster', 'info']]) {
      const r = mw.c.gnt(argv[0], ...argv.slice(1));
      if (r.code !== 0) problems.push(`${argv.join(' ')} exited ${r.code}: ${r.stderr.slice(0, 200)}`);
    }

    const allowed = [nw.dataDir, nw.storageDir, mw.c.work];
    for (const p of newPathsOutside(pathsBefore, snapshotPaths(roots), allowed)) problems.push(`new file outside the daemons' directories: ${p}`);
    for (const d of diffDigests(decoysBefore, new Map([...digestTree(nw.decoys.near), ...digestTree(nw.decoys.tmp)]))) problems.push(`decoy ${d}`);
    for (const f of nw.decoys.forbidden) if (fs.existsSync(f)) problems.push(`${f} exists (an injected command or migration target ran)`);

    const leaked = taps().filter((t) => !owned.includes(t));
    if (leaked.length > 0) problems.push(`taps no runtime file owns: ${leaked.join(', ')}`);
    assert.deepEqual(problems, [], `seed ${SEED}:\n${problems.join('\n')}`);
  });
});
