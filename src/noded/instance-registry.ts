/**
 * The instances of this node: exactly one KvmInstance (so one monitor
 * connection, and one operation queue) per instance, for the daemon's whole
 * life. Every RPC that touches an instance goes through that object, so its
 * operations run one at a time in arrival order, while different instances
 * run in parallel. Creating and deleting an instance additionally hold a
 * per-name lock, so that two InstanceStart calls cannot both create it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { errorMessage } from '../hypervisor/errors';
import { GuestAgent } from '../hypervisor/guest-agent';
import { GuestAgentCalls } from '../hypervisor/guest-agent-calls';
import { GuestConsole, type GuestState } from '../hypervisor/guest-console';
import { assertInstanceName } from '../hypervisor/instance-paths';
import { KvmInstance, type KvmInstanceOptions, type ReconcileReport } from '../hypervisor/kvm-instance';
import { notFound } from './status';

export type Logger = (line: string) => void;

export function describeReconcile(r: ReconcileReport): string {
  return `completed [${r.completed.join(', ')}], rolled back [${r.rolledBack.join(', ')}], removal pending [${r.pending.join(', ')}]`;
}

interface Entry {
  instance: KvmInstance;
  console: GuestConsole;
  /** The one client of the instance's guest agent (the agent serves one at a time), made on first use. */
  agent?: GuestAgentCalls;
}

export class InstanceRegistry {
  private readonly entries = new Map<string, Entry>();
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(
    readonly nodeName: string,
    readonly dataDir: string,
    readonly options: KvmInstanceOptions,
    private readonly log: Logger,
  ) {}

  /**
   * Opens every runtime file in the data directory. For each instance whose
   * QEMU still runs, reconnects to its monitor and settles half-done hotplugs
   * (reconcile); both are queued on the instance, so RPCs that arrive
   * meanwhile wait for them. Resolves when every reconcile has finished.
   */
  load(): Promise<void> {
    fs.mkdirSync(this.dataDir, { recursive: true, mode: 0o700 });
    const pending: Array<Promise<void>> = [];
    for (const dirent of fs.readdirSync(this.dataDir, { withFileTypes: true })) {
      if (!dirent.isDirectory() || !fs.existsSync(path.join(this.dataDir, dirent.name, 'runtime.json'))) continue;
      let inst: KvmInstance;
      try {
        assertInstanceName(dirent.name);
        inst = KvmInstance.open(this.dataDir, dirent.name, this.options);
      } catch (err) {
        this.log(`cannot load instance ${dirent.name}: ${errorMessage(err)}`);
        continue;
      }
      this.add(inst);
      const pid = inst.pid;
      this.log(`loaded instance ${inst.name} (${pid === undefined ? 'stopped' : `running, pid ${pid}`})`);
      if (pid === undefined) continue;
      // Connect and reconcile are one queue entry: no request for the
      // instance runs before its half-done changes are settled.
      pending.push(
        inst.openAndReconcile().then(
          (r) => this.log(`reconciled ${inst.name}: ${describeReconcile(r)}`),
          (err) => this.log(`reconcile of ${inst.name} failed: ${errorMessage(err)}`),
        ),
      );
    }
    return Promise.all(pending).then(() => undefined);
  }

  /** Starts tracking an instance object (a new one, or one just loaded). */
  add(inst: KvmInstance): KvmInstance {
    inst.on('warning', (msg: string) => this.log(`instance ${inst.name}: warning: ${msg}`));
    inst.on('reconciled', (r: ReconcileReport) => this.log(`reconciled ${inst.name}: ${describeReconcile(r)}`));
    inst.on('device-removed', (d: { kind: string; uuid: string }) =>
      this.log(`instance ${inst.name}: the guest released ${d.kind} ${d.uuid}; removed`),
    );
    this.entries.set(inst.name, { instance: inst, console: new GuestConsole(inst.paths.consoleLog) });
    return inst;
  }

  /** The instance, or NOT_FOUND. Names are validated first (INVALID_ARGUMENT). */
  get(name: string): KvmInstance {
    const inst = this.find(name);
    if (!inst) throw notFound(`instance ${name} is not known on node ${this.nodeName} (no runtime file in ${this.dataDir})`);
    return inst;
  }

  find(name: string): KvmInstance | undefined {
    return this.entries.get(assertInstanceName(name))?.instance;
  }

  all(): KvmInstance[] {
    return [...this.entries.values()].map((e) => e.instance).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** What the guest last reported on its console, if anything. */
  guest(name: string): GuestState | undefined {
    return this.entries.get(name)?.console.poll();
  }

  /** Forgets what the guest said before: call when QEMU (re)starts, as the console log starts over. */
  resetConsole(name: string): void {
    const e = this.entries.get(name);
    if (!e) return;
    e.console = new GuestConsole(e.instance.paths.consoleLog);
    e.agent?.agent.close(); // the socket is a new QEMU's
    delete e.agent;
  }

  /** The guest agent client of a registered instance (the caller checks that it runs with a channel). */
  guestAgent(name: string): GuestAgentCalls {
    const e = this.entries.get(name);
    if (!e) throw notFound(`no instance ${name} on node ${this.nodeName}`);
    return (e.agent ??= new GuestAgentCalls(new GuestAgent(e.instance.paths.agentSocket)));
  }

  delete(name: string): void {
    const e = this.entries.get(name);
    if (!e) return;
    e.agent?.agent.close();
    e.instance.disconnect();
    e.instance.removeAllListeners();
    this.entries.delete(name);
  }

  /** Runs `fn` while holding the lock on `name` (for creating and deleting instances). */
  withName<T>(name: string, fn: () => Promise<T>): Promise<T> {
    assertInstanceName(name);
    const prev = this.locks.get(name) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(name, tail);
    void tail.then(() => {
      if (this.locks.get(name) === tail) this.locks.delete(name);
    });
    return run;
  }

  /** Closes every monitor connection (QEMU keeps running). */
  closeAll(): void {
    for (const e of this.entries.values()) e.instance.disconnect();
  }
}
