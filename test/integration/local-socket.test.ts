/**
 * The master's local unix socket for the CLI (src/master/local-socket.ts):
 * real gnt-masterd and gnt-noded processes, the real CLI, and a real
 * unprivileged user for the refusals.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI_MAIN, startDaemon, stopDaemon, TestCluster, type CliRun } from '../support/cli-cluster';
import { freePort } from '../support/noded';

/** Runs the CLI with extra environment. */
function cli(c: TestCluster, env: Record<string, string>, prog: string, ...args: string[]): CliRun {
  const r = spawnSync(process.execPath, [CLI_MAIN, prog, ...args, '--cluster-dir', c.clusterDir], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Connects to `socket` as user `nobody`; returns the error code, or "connected". */
function connectAsNobody(socket: string): string {
  const probe = `const s=require('net').connect(process.argv[1]);s.on('connect',()=>{console.log('connected');s.destroy()});s.on('error',(e)=>console.log(e.code))`;
  const r = spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', '--', process.execPath, '-e', probe, socket], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, `setpriv: ${r.stderr}`);
  return r.stdout.trim();
}

describe('the master\'s local CLI socket', function () {
  this.timeout(180_000);
  const c = new TestCluster();
  const socket = path.join(c.clusterDir, 'masterd.sock');
  const pki = (f: string) => path.join(c.clusterDir, 'pki', f);

  before(async () => {
    await c.init();
    await c.addNode('node1');
  });
  after(() => c.destroy());

  it('is created 0600, owned by root, in the 0700 cluster directory', () => {
    const st = fs.lstatSync(socket);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, 0);
    assert.equal(fs.statSync(c.clusterDir).mode & 0o777, 0o700);
    assert.match(c.masterDaemon!.stderr(), /local CLI socket is .*masterd\.sock/);
    assert.deepEqual(fs.readdirSync(c.clusterDir).filter((f) => f.includes('.tmp')), [], 'no temporary socket left');
  });

  it('serves the CLI without the CLI certificate; TLS still needs it', () => {
    fs.renameSync(pki('cli.key'), pki('cli.key.away'));
    try {
      const nodes = c.json<{ name: string }[]>(c.gnt('gnt-node', 'list', '--output', 'json'));
      assert.deepEqual(nodes.map((n) => n.name), ['node1']);
      // A job through the socket: submitted, run, watched to its end.
      c.ok(c.gnt('gnt-cluster', 'verify'));
      const tls = cli(c, { GNT_CLI_TRANSPORT: 'tls' }, 'gnt-node', 'list');
      assert.equal(tls.code, 1);
      assert.match(tls.stderr, /missing .*cli\.key/);
    } finally {
      fs.renameSync(pki('cli.key.away'), pki('cli.key'));
    }
    c.ok(cli(c, { GNT_CLI_TRANSPORT: 'tls' }, 'gnt-node', 'list'));
  });

  it('leaves node daemons on mutual TLS: the master reaches node1, and a node certificate is still refused by the master', () => {
    const info = c.json<{ live: { reachable: boolean } }>(c.gnt('gnt-node', 'info', 'node1', '--output', 'json'));
    assert.equal(info.live.reachable, true);
    const n = c.node('node1');
    assert.deepEqual(fs.readdirSync(n.dataDir).filter((f) => f.endsWith('.sock') && f.startsWith('masterd')), []);
    // The CLI presenting node1's certificate over TLS is refused as before.
    const dir = c.dir('node-as-cli');
    fs.copyFileSync(path.join(n.certsDir, 'node.pem'), path.join(dir, 'cli.pem'));
    fs.copyFileSync(path.join(n.certsDir, 'node.key'), path.join(dir, 'cli.key'));
    const saved = ['cli.pem', 'cli.key'].map((f) => [pki(f), fs.readFileSync(pki(f))] as const);
    try {
      fs.copyFileSync(path.join(dir, 'cli.pem'), pki('cli.pem'));
      fs.copyFileSync(path.join(dir, 'cli.key'), pki('cli.key'));
      const r = cli(c, { GNT_CLI_TRANSPORT: 'tls' }, 'gnt-node', 'list');
      assert.equal(r.code, 1);
      assert.match(r.stderr, /needs the CLI or master certificate.*node node1/);
    } finally {
      for (const [f, data] of saved) fs.writeFileSync(f, data, { mode: 0o600 });
    }
  });

  it('cannot be opened by a user other than root, even with the directory opened up', () => {
    assert.equal(connectAsNobody(socket), 'EACCES');
    fs.chmodSync(c.clusterDir, 0o711);
    try {
      assert.equal(connectAsNobody(socket), 'EACCES', 'the socket itself is 0600');
    } finally {
      fs.chmodSync(c.clusterDir, 0o700);
    }
  });

  it('a stale socket of a killed master is replaced at the next start', async () => {
    await c.killMaster('SIGKILL');
    assert.ok(fs.lstatSync(socket).isSocket(), 'SIGKILL leaves the socket behind');
    const down = c.gnt('gnt-node', 'list');
    assert.equal(down.code, 1);
    assert.match(down.stderr, /cannot reach the master at unix:.*masterd\.sock/);
    await c.startMaster();
    assert.match(c.masterDaemon!.stderr(), /removed the stale socket .*masterd\.sock/);
    c.ok(c.gnt('gnt-node', 'list'));
  });

  it('a live master\'s socket is not taken over by a second master', async () => {
    const port = await freePort();
    const second = startDaemon([CLI_MAIN, 'gnt-masterd', '--cluster-dir', c.clusterDir, '--listen', `127.0.0.1:${port}`], /gnt-masterd listening on/, path.join(c.work, 'second.log'));
    await assert.rejects(second, /exited with 1.*another gnt-masterd is serving on .*masterd\.sock/s);
    c.ok(c.gnt('gnt-node', 'list'));
  });

  it('is refused in a directory others can enter, and a file that is not a socket is left alone', async () => {
    const open = c.dir('open');
    fs.chmodSync(open, 0o755);
    const port = await freePort();
    const args = (sock: string) => [CLI_MAIN, 'gnt-masterd', '--cluster-dir', c.clusterDir, '--listen', `127.0.0.1:${port}`, '--local-socket', sock];
    await assert.rejects(startDaemon(args(path.join(open, 'm.sock')), /listening on/, path.join(c.work, 'open.log')), /has mode 0755.*chmod 700/s);
    assert.ok(!fs.existsSync(path.join(open, 'm.sock')));
    const closed = c.dir('closed');
    fs.chmodSync(closed, 0o700);
    fs.writeFileSync(path.join(closed, 'm.sock'), 'precious');
    await assert.rejects(startDaemon(args(path.join(closed, 'm.sock')), /listening on/, path.join(c.work, 'closed.log')), /exists and is not a socket/);
    assert.equal(fs.readFileSync(path.join(closed, 'm.sock'), 'utf8'), 'precious');
  });

  it('--local-socket none serves TLS only; the CLI then uses TLS by itself', async () => {
    await c.killMaster('SIGTERM');
    assert.ok(!fs.existsSync(socket), 'a clean stop removes the socket');
    const d = await startDaemon([CLI_MAIN, 'gnt-masterd', '--cluster-dir', c.clusterDir, '--local-socket', 'none'], /listening on/, path.join(c.work, 'none.log'));
    try {
      assert.ok(!fs.existsSync(socket));
      fs.renameSync(pki('cli.key'), pki('cli.key.away'));
      try {
        assert.match(c.gnt('gnt-node', 'list').stderr, /missing .*cli\.key/, 'no socket: the CLI goes to TLS');
      } finally {
        fs.renameSync(pki('cli.key.away'), pki('cli.key'));
      }
      c.ok(c.gnt('gnt-node', 'list'));
    } finally {
      await stopDaemon(d);
    }
    await c.startMaster();
    c.ok(c.gnt('gnt-node', 'list'));
  });
});
