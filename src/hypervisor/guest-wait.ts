/**
 * Hotplug confirmed by the guest: waits until the guest agent reports a
 * device that was just hot-added (a NIC by MAC, a disk by PCI or SCSI
 * address, a vCPU online, memory online), onlining vCPUs and memory blocks
 * through the agent when the guest left them offline.
 *
 * It never hangs: every agent call has its own timeout, and the whole wait
 * has a deadline. No agent answering is an answer too ("no agent"), given
 * after the agent's sync timeout, not after the whole wait.
 */
import { AgentNotAnsweringError } from './guest-agent';
import type { GuestAgentCalls } from './guest-agent-calls';
import { errorMessage } from './errors';

export type GuestDevice =
  | { kind: 'nic'; mac: string }
  | { kind: 'disk'; pci?: string; scsi?: string }
  | { kind: 'vcpus'; online: number }
  | { kind: 'memory' };

export interface GuestWaitResult {
  seen: boolean;
  /** No agent answers: nothing was waited for. */
  noAgent: boolean;
  waitedMs: number;
  /** vCPUs and memory blocks this wait brought online through the agent. */
  onlinedVcpus: number;
  onlinedMemoryBlocks: number;
  /** What was seen, or why not. */
  message: string;
}

const POLL_MS = 100;

export function describeDevice(d: GuestDevice): string {
  switch (d.kind) {
    case 'nic':
      return `NIC ${d.mac}`;
    case 'disk':
      return d.scsi ? `SCSI disk ${d.scsi}` : `disk at PCI ${d.pci ?? '?'}`;
    case 'vcpus':
      return `${d.online} online vCPUs`;
    case 'memory':
      return 'all memory online';
  }
}

interface Step {
  seen: boolean;
  detail: string;
  onlinedVcpus?: number;
  onlinedMemoryBlocks?: number;
}

/** One look (and, for vCPUs and memory, one onlining) through the agent. */
async function look(calls: GuestAgentCalls, d: GuestDevice): Promise<Step> {
  switch (d.kind) {
    case 'nic': {
      const mac = d.mac.toLowerCase();
      const i = (await calls.interfaces()).find((x) => x.mac === mac);
      return { seen: i !== undefined, detail: i ? `interface ${i.name}` : 'not listed yet' };
    }
    case 'disk': {
      const disk = (await calls.disks()).find((x) => !x.partition && (d.scsi ? x.scsi === d.scsi : x.pci === d.pci));
      return { seen: disk !== undefined, detail: disk ? disk.name : 'not listed yet' };
    }
    case 'vcpus': {
      const cpus = await calls.vcpus();
      const offline = cpus.filter((c) => !c.online);
      const online = cpus.length - offline.length;
      if (online >= d.online) return { seen: true, detail: `${online} vCPUs online` };
      if (offline.length === 0) return { seen: false, detail: `${online} vCPUs listed` };
      const want = offline.slice(0, d.online - online).map((c) => ({ logicalId: c.logicalId, online: true }));
      const n = await calls.setVcpus(want);
      return { seen: online + n >= d.online, detail: `${online + n} vCPUs online`, onlinedVcpus: n };
    }
    case 'memory': {
      const offline = (await calls.memoryBlocks()).filter((b) => !b.online);
      if (offline.length === 0) return { seen: true, detail: 'every memory block online' };
      const results = await calls.setMemoryBlocks(offline.map((b) => ({ physIndex: b.physIndex, online: true })));
      const ok = results.filter((r) => r.response === 'success').length;
      const failed = results.find((r) => r.response !== 'success');
      return {
        seen: ok === offline.length,
        detail: failed ? `memory block ${failed.physIndex}: ${failed.response}` : `${ok} memory blocks onlined`,
        onlinedMemoryBlocks: ok,
      };
    }
  }
}

/** Waits up to `timeoutMs` for the guest to report `device`; see the file comment. */
export async function waitForGuestDevice(calls: GuestAgentCalls, device: GuestDevice, timeoutMs: number): Promise<GuestWaitResult> {
  const started = Date.now();
  const out: GuestWaitResult = { seen: false, noAgent: false, waitedMs: 0, onlinedVcpus: 0, onlinedMemoryBlocks: 0, message: '' };
  let last = 'no reply yet';
  for (;;) {
    try {
      const step = await look(calls, device);
      out.onlinedVcpus += step.onlinedVcpus ?? 0;
      out.onlinedMemoryBlocks += step.onlinedMemoryBlocks ?? 0;
      last = step.detail;
      if (step.seen) {
        out.seen = true;
        out.waitedMs = Date.now() - started;
        out.message = `the guest agent reports ${describeDevice(device)} (${step.detail}) after ${out.waitedMs} ms`;
        return out;
      }
    } catch (err) {
      if (err instanceof AgentNotAnsweringError) {
        out.noAgent = true;
        out.waitedMs = Date.now() - started;
        out.message = `${err.message}; not waiting for the guest`;
        return out;
      }
      last = errorMessage(err);
    }
    if (Date.now() - started >= timeoutMs) {
      out.waitedMs = Date.now() - started;
      out.message = `the guest agent did not report ${describeDevice(device)} within ${timeoutMs} ms (last: ${last})`;
      return out;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
