/**
 * The guest agent client's framing against a local socket server that
 * answers as qemu-ga does (its replies are ones captured from the real
 * agent, test/fixtures/qga), and the typed parsing of those replies.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { AgentCommandError, AgentNotAnsweringError, AgentTimeoutError, GuestAgent } from '../../src/hypervisor/guest-agent';
import { GuestAgentCalls, parseDisks, parseInterfaces, parseMemoryBlocks, parseVcpus } from '../../src/hypervisor/guest-agent-calls';
import { waitForGuestDevice } from '../../src/hypervisor/guest-wait';

const FIXTURES = path.resolve(__dirname, '../../../test/fixtures/qga');
const fixture = (name: string): { return?: unknown; error?: { class: string; desc: string } } =>
  JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8'));

type Handler = (cmd: { execute: string; arguments?: Record<string, unknown> }, sock: net.Socket) => void;

/** A fake agent: answers the sync with the 0xFF delimiter, then each command through `handler`. */
class FakeAgent {
  readonly socketPath: string;
  connections = 0;
  private server: net.Server;
  constructor(
    private handler: Handler,
    private beforeSync: (sock: net.Socket) => void = () => undefined,
  ) {
    this.socketPath = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-qga-')), 'qga.sock');
    this.server = net.createServer((sock) => {
      this.connections++;
      let buf = '';
      sock.on('data', (d: Buffer) => {
        buf += d.toString('latin1').replace(/\xff/g, '');
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string; arguments?: Record<string, unknown> };
          buf = buf.slice(nl + 1);
          if (cmd.execute === 'guest-sync-delimited') {
            this.beforeSync(sock);
            sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ return: cmd.arguments?.id }) + '\n')]));
          } else this.handler(cmd, sock);
        }
      });
      sock.on('error', () => undefined);
    });
  }
  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.socketPath, r));
  }
  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

const replyWith = (name: string): Handler => (_cmd, sock) => sock.write(JSON.stringify(fixture(name)) + '\n');

describe('guest agent client', () => {
  const servers: FakeAgent[] = [];
  const clients: GuestAgent[] = [];
  async function start(handler: Handler, beforeSync?: (sock: net.Socket) => void): Promise<{ fake: FakeAgent; agent: GuestAgent }> {
    const fake = new FakeAgent(handler, beforeSync);
    await fake.listen();
    servers.push(fake);
    const agent = new GuestAgent(fake.socketPath, { syncTimeoutMs: 1000, timeoutMs: 300 });
    clients.push(agent);
    return { fake, agent };
  }
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const s of servers.splice(0)) await s.close();
  });

  it('drops stale bytes before the delimiter and older replies after it', async () => {
    const { agent } = await start(replyWith('guest-get-vcpus'), (sock) => sock.write('{"return": {"stale": 1}}\n{"retu'));
    assert.deepEqual(await new GuestAgentCalls(agent).vcpus(), parseVcpus(fixture('guest-get-vcpus').return));
  });

  it('reads a reply that arrives in pieces', async () => {
    const { agent } = await start((_cmd, sock) => {
      const text = JSON.stringify(fixture('guest-network-get-interfaces')) + '\n';
      sock.write(text.slice(0, 7));
      setTimeout(() => sock.write(text.slice(7, 40)), 20);
      setTimeout(() => sock.write(text.slice(40)), 40);
    });
    const ifs = await new GuestAgentCalls(agent).interfaces();
    assert.ok(ifs.some((i) => i.mac === '52:54:00:a9:00:01'));
  });

  it('times out a command, then connects and synchronises again', async () => {
    let calls = 0;
    const { fake, agent } = await start((_cmd, sock) => {
      calls++;
      if (calls === 1) return; // the first command gets no reply
      sock.write(JSON.stringify(fixture('guest-get-vcpus')) + '\n');
    });
    await assert.rejects(agent.execute('guest-get-vcpus'), (e: unknown) => e instanceof AgentTimeoutError && /did not answer guest-get-vcpus within 300 ms/.test(e.message));
    assert.ok(Array.isArray(await agent.execute('guest-get-vcpus')));
    assert.equal(fake.connections, 2);
  });

  it("turns an error reply into AgentCommandError and keeps the connection", async () => {
    const { fake, agent } = await start(replyWith('guest-set-vcpus-cpu0-offline'));
    await assert.rejects(new GuestAgentCalls(agent).setVcpus([{ logicalId: 0, online: false }]), (e: unknown) =>
      e instanceof AgentCommandError && e.agentClass === 'GenericError' && /logical processor #0 can't be offlined/.test(e.message));
    await assert.rejects(agent.execute('guest-set-vcpus'), AgentCommandError);
    assert.equal(fake.connections, 1);
  });

  it('says no agent answers when the sync gets no reply, and when nothing listens', async () => {
    const fake = new FakeAgent(() => undefined);
    const silent = net.createServer((s) => s.on('error', () => undefined).resume());
    await new Promise<void>((r) => silent.listen(fake.socketPath, r));
    const agent = new GuestAgent(fake.socketPath, { syncTimeoutMs: 200 });
    clients.push(agent);
    await assert.rejects(agent.execute('guest-ping'), (e: unknown) => e instanceof AgentNotAnsweringError && /no reply to guest-sync-delimited within 200 ms/.test(e.message));
    await new Promise<void>((r) => silent.close(() => r()));
    fs.rmSync(fake.socketPath, { force: true });
    await assert.rejects(agent.execute('guest-ping'), (e: unknown) => e instanceof AgentNotAnsweringError && /cannot connect/.test(e.message));
  });

  it('a wait for the guest returns "no agent" at once without one', async () => {
    const agent = new GuestAgent(path.join(os.tmpdir(), `gnt-no-such-${process.pid}.sock`), { syncTimeoutMs: 200 });
    clients.push(agent);
    const r = await waitForGuestDevice(new GuestAgentCalls(agent), { kind: 'nic', mac: '52:54:00:00:00:01' }, 60_000);
    assert.equal(r.noAgent, true);
    assert.match(r.message, /not waiting for the guest/);
  });
});

describe('guest agent replies (captured from qemu-ga 7.2)', () => {
  it('interfaces: names, lower-case MACs and addresses', () => {
    const ifs = parseInterfaces(fixture('guest-network-get-interfaces').return);
    assert.ok(ifs.some((i) => i.name === 'lo'));
    const eth = ifs.find((i) => i.mac === '52:54:00:a9:00:01');
    assert.ok(eth && eth.addresses.includes('fe80::5054:ff:fea9:1/64'), JSON.stringify(eth));
  });
  it('disks: the PCI address of a virtio disk', () => {
    const disks = parseDisks(fixture('guest-get-disks').return);
    assert.deepEqual(disks.map((d) => [d.name, d.busType, d.pci, d.scsi]), [['/dev/vda', 'virtio', '0000:00:05.0', '']]);
  });
  it('vCPUs and memory blocks: the hot-added ones offline', () => {
    assert.deepEqual(parseVcpus(fixture('guest-get-vcpus').return).map((c) => [c.logicalId, c.online]).sort(), [[0, true], [1, false]]);
    assert.ok(parseMemoryBlocks(fixture('guest-get-memory-blocks').return).some((b) => !b.online));
  });
  it('rejects a reply of the wrong shape with a message naming it', () => {
    assert.throws(() => parseVcpus([{ 'logical-id': 'x', online: true }]), /vCPU has no integer logical-id/);
    assert.throws(() => parseDisks({}), /guest-get-disks reply is not a list/);
  });
});
