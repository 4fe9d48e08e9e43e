/**
 * Prometheus metrics of a real cluster: gnt-noded and gnt-masterd started
 * with --metrics-listen, a few hotplugs through the CLI (two NIC adds, one
 * remove, one add the node refuses), then both endpoints scraped over HTTP
 * and the counts checked exactly.
 */
import * as assert from 'node:assert/strict';
import * as http from 'node:http';
import { guestFiles } from '../support/guest';
import { TestCluster } from '../support/cli-cluster';
import { freePort } from '../support/noded';

function scrape(port: number, urlPath = '/metrics'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: urlPath }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

/** The value of one sample line, e.g. value(body, 'x_count', { kind: 'nic' }); undefined when absent. */
function value(body: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of body.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('Prometheus metrics of gnt-noded and gnt-masterd (--metrics-listen)', function () {
  this.timeout(300_000);
  const c = new TestCluster();
  let nodePort = 0;
  let masterPort = 0;

  before(async () => {
    nodePort = await freePort();
    masterPort = await freePort();
    await c.init({}, ['--metrics-listen', `127.0.0.1:${masterPort}`]);
    await c.addNode('node1', { extraArgs: ['--metrics-listen', `127.0.0.1:${nodePort}`] });
    const g = guestFiles();
    c.ok(c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', g.kernel, '--initrd', g.initrd, '--kernel-args', 'console=ttyS0 quiet panic=-1', 'm1'));
  });
  after(async () => {
    c.gnt('gnt-instance', 'remove', 'm1');
    await c.destroy();
  });

  it('counts the hotplugs by kind, action and outcome, QMP commands and jobs', async () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', 'add:mac=52:54:00:3e:00:01', 'm1'));
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', 'add:mac=52:54:00:3e:00:02', 'm1'));
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', '1:remove', 'm1'));
    // A NIC on a bridge that does not exist: the node refuses it.
    assert.notEqual(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', 'add:mac=52:54:00:3e:00:03,link=nosuchbr0', 'm1').code, 0);

    const node = await scrape(nodePort);
    assert.equal(node.status, 200);
    const h = 'gnt_noded_hotplug_duration_seconds_count';
    assert.equal(value(node.body, h, { kind: 'nic', action: 'add', outcome: 'ok' }), 2, node.body.split('\n').filter((l) => l.startsWith(h)).join('\n'));
    // The guest may not have released the NIC within the unplug timeout yet (outcome "pending"): one remove either way.
    assert.equal((value(node.body, h, { kind: 'nic', action: 'remove', outcome: 'ok' }) ?? 0) + (value(node.body, h, { kind: 'nic', action: 'remove', outcome: 'pending' }) ?? 0), 1);
    assert.equal(value(node.body, h, { kind: 'nic', action: 'add', outcome: 'failed' }), 1, node.body.split('\n').filter((l) => l.startsWith(h)).join('\n'));
    assert.equal(value(node.body, 'gnt_noded_operations_in_flight'), 0);
    assert.equal(value(node.body, 'gnt_noded_instances_running'), 1);
    assert.ok((value(node.body, 'gnt_noded_qmp_command_duration_seconds_count', { command: 'device_add' }) ?? 0) >= 2);

    const master = await scrape(masterPort);
    assert.equal(master.status, 200);
    const finished = master.body.split('\n').filter((l) => l.startsWith('gnt_masterd_jobs_finished_total{') && l.includes('modify'));
    const total = (status: string): number => finished.filter((l) => l.includes(`status="${status}"`)).reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    assert.equal(total('success'), 3, finished.join('\n'));
    assert.equal(total('error'), 1, finished.join('\n'));
    assert.equal(value(master.body, 'gnt_masterd_job_queue_length', { status: 'running' }), 0);
    assert.equal((await scrape(nodePort, '/')).status, 404);
  });
});
