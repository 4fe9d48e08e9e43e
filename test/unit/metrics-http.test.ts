/** --metrics-listen's address parser and the HTTP endpoint (real sockets on loopback, a real prom-client registry). */
import * as assert from 'node:assert/strict';
import * as http from 'node:http';
import { Counter, Registry } from 'prom-client';
import { MetricsAddressError, parseMetricsAddress, startMetricsServer } from '../../src/common/metrics-http';
import { NodeMetrics } from '../../src/noded/metrics';

function get(port: number, path: string, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('metrics endpoint', () => {
  it('parses HOST:PORT and [IPV6]:PORT', () => {
    assert.deepEqual(parseMetricsAddress('127.0.0.1:9100'), { host: '127.0.0.1', port: 9100 });
    assert.deepEqual(parseMetricsAddress('[::1]:0'), { host: '::1', port: 0 });
    assert.deepEqual(parseMetricsAddress('localhost:80'), { host: 'localhost', port: 80 });
  });

  it('refuses bad addresses with an error naming them', () => {
    for (const bad of ['127.0.0.1', ':9100', '127.0.0.1:99999', '[zz]:1', '::1:80', '300.1.1.1:80', '127.0.0.1:9x', '']) {
      assert.throws(() => parseMetricsAddress(bad), (e: unknown) => e instanceof MetricsAddressError && e.message.includes('--metrics-listen'), bad);
    }
  });

  it('answers GET /metrics with the registry, 404 otherwise, and refuses a port in use', async () => {
    const reg = new Registry();
    new Counter({ name: 'test_things_total', help: 'things', registers: [reg] }).inc(3);
    const srv = await startMetricsServer(reg, { host: '127.0.0.1', port: 0 });
    try {
      const ok = await get(srv.port, '/metrics');
      assert.equal(ok.status, 200);
      assert.match(ok.body, /^test_things_total 3$/m);
      assert.equal((await get(srv.port, '/')).status, 404);
      assert.equal((await get(srv.port, '/metrics', 'POST')).status, 404);
      await assert.rejects(startMetricsServer(reg, { host: '127.0.0.1', port: srv.port }), /cannot listen: the port is in use/);
    } finally {
      await srv.close();
    }
  });

  it('counts node hotplug outcomes per label set, two registries apart', async () => {
    const a = new NodeMetrics(() => 2);
    const b = new NodeMetrics(() => 0);
    await a.time('nic', 'ADD', async () => 1);
    await a.time('nic', 'REMOVE', async () => ({ removalPending: true }), () => 'pending');
    await assert.rejects(a.time('nic', 'ADD', async () => Promise.reject(new Error('bad mac'))), /bad mac/);
    const text = await a.registry.metrics();
    assert.match(text, /^gnt_noded_hotplug_duration_seconds_count\{kind="nic",action="add",outcome="ok"\} 1$/m);
    assert.match(text, /^gnt_noded_hotplug_duration_seconds_count\{kind="nic",action="add",outcome="failed"\} 1$/m);
    assert.match(text, /^gnt_noded_hotplug_duration_seconds_count\{kind="nic",action="remove",outcome="pending"\} 1$/m);
    assert.match(text, /^gnt_noded_operations_in_flight 0$/m);
    assert.match(text, /^gnt_noded_instances_running 2$/m);
    assert.doesNotMatch(await b.registry.metrics(), /gnt_noded_hotplug_duration_seconds_count/);
  });
});
