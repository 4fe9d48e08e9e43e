/**
 * The guest's own view through its agent, in one read: what
 * `gnt-instance info` shows. No agent answering is a view too (answers
 * false, and why), never an exception.
 */
import { AgentNotAnsweringError } from './guest-agent';
import type { AgentDisk, AgentInterface, GuestAgentCalls } from './guest-agent-calls';
import { errorMessage } from './errors';

export interface GuestAgentView {
  answers: boolean;
  error: string;
  agentVersion: string;
  os: string;
  kernelRelease: string;
  interfaces: AgentInterface[];
  disks: AgentDisk[];
  vcpusOnline: number;
  vcpusListed: number;
  memoryBlocksOnline: number;
  memoryBlocksListed: number;
  memoryBlockBytes: number;
}

export const noAgentView = (error: string): GuestAgentView => ({
  answers: false, error, agentVersion: '', os: '', kernelRelease: '', interfaces: [], disks: [],
  vcpusOnline: 0, vcpusListed: 0, memoryBlocksOnline: 0, memoryBlocksListed: 0, memoryBlockBytes: 0,
});

/** Reads everything `gnt-instance info` shows from the agent; commands the agent lacks leave their part empty. */
export async function readGuestAgentView(calls: GuestAgentCalls): Promise<GuestAgentView> {
  try {
    const info = await calls.info();
    const has = (c: string): boolean => info.commands.includes(c);
    const os = has('guest-get-osinfo') ? await calls.osInfo() : undefined;
    const cpus = has('guest-get-vcpus') ? await calls.vcpus() : [];
    const blocks = has('guest-get-memory-blocks') ? await calls.memoryBlocks() : [];
    return {
      answers: true,
      error: '',
      agentVersion: info.version,
      os: os?.prettyName ?? os?.name ?? (os ? `Linux ${os.kernelRelease}` : ''),
      kernelRelease: os?.kernelRelease ?? '',
      interfaces: has('guest-network-get-interfaces') ? await calls.interfaces() : [],
      disks: has('guest-get-disks') ? (await calls.disks()).filter((d) => !d.partition) : [],
      vcpusOnline: cpus.filter((c) => c.online).length,
      vcpusListed: cpus.length,
      memoryBlocksOnline: blocks.filter((b) => b.online).length,
      memoryBlocksListed: blocks.length,
      memoryBlockBytes: has('guest-get-memory-block-info') ? await calls.memoryBlockSize() : 0,
    };
  } catch (err) {
    return noAgentView(err instanceof AgentNotAnsweringError ? err.message : `the guest agent failed: ${errorMessage(err)}`);
  }
}
