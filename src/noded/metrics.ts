/**
 * gnt-noded's Prometheus metrics (prefix gnt_noded_), on a registry of its
 * own. The daemon sets `nodeMetrics` at start when --metrics-listen is
 * given; the hooks in the RPC handlers are no-ops without it.
 */
import { collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { QmpClient } from '../hypervisor/qmp-client';

export type HotplugOutcome = 'ok' | 'failed' | 'pending' | 'unknown';

export class NodeMetrics {
  readonly registry = new Registry();
  readonly hotplugSeconds = new Histogram({
    name: 'gnt_noded_hotplug_duration_seconds',
    help: 'HotplugDevice and InstanceResize calls, by device kind, action and outcome',
    labelNames: ['kind', 'action', 'outcome'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({ name: 'gnt_noded_operations_in_flight', help: 'hotplug and resize calls running now', registers: [this.registry] });
  readonly qmpSeconds = new Histogram({
    name: 'gnt_noded_qmp_command_duration_seconds',
    help: 'QMP command latency, by command and outcome (ok: answered without error)',
    labelNames: ['command', 'outcome'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [this.registry],
  });

  constructor(instancesRunning: () => number) {
    new Gauge({
      name: 'gnt_noded_instances_running',
      help: 'instances with a running QEMU on this node',
      registers: [this.registry],
      collect() {
        this.set(instancesRunning());
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: 'gnt_noded_' });
  }

  /** Runs one hotplug/resize call, timed; its outcome from the reply (pending removal) or the error. */
  async time<T>(kind: string, action: string, fn: () => Promise<T>, outcomeOf: (r: T) => HotplugOutcome = () => 'ok'): Promise<T> {
    const end = this.hotplugSeconds.startTimer({ kind, action: action.toLowerCase() });
    this.inFlight.inc();
    try {
      const r = await fn();
      end({ outcome: outcomeOf(r) });
      return r;
    } catch (err) {
      end({ outcome: 'failed' });
      throw err;
    } finally {
      this.inFlight.dec();
    }
  }

  /** Makes every QMP client of this process report its commands here. */
  observeQmp(): void {
    QmpClient.observer = (command, seconds, ok) => this.qmpSeconds.observe({ command, outcome: ok ? 'ok' : 'failed' }, seconds);
  }
}

/** The daemon's metrics, when --metrics-listen was given. */
export let nodeMetrics: NodeMetrics | undefined;

export function enableNodeMetrics(m: NodeMetrics): void {
  nodeMetrics = m;
  m.observeQmp();
}

/** Times `fn` if metrics are on. */
export function timedHotplug<T>(kind: string, action: string, fn: () => Promise<T>): Promise<T> {
  const pending = (r: T): HotplugOutcome => (typeof r === 'object' && r !== null && (r as { removalPending?: unknown }).removalPending === true ? 'pending' : 'ok');
  return nodeMetrics ? nodeMetrics.time(kind, action, fn, pending) : fn();
}
