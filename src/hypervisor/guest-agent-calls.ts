/**
 * The guest agent commands gnt-hotplug uses, with their replies checked and
 * typed. The shapes are those of qemu-ga 7.2 and 10.0 (QEMU's
 * qga/qapi-schema.json); fields gnt-hotplug does not use are dropped.
 */
import type { GuestAgent } from './guest-agent';

export interface AgentInfo {
  version: string;
  /** Enabled commands. */
  commands: string[];
}

export interface AgentOsInfo {
  kernelRelease: string;
  kernelVersion: string;
  machine: string;
  /** From the guest's os-release, when it has one. */
  id?: string;
  name?: string;
  prettyName?: string;
  version?: string;
}

export interface AgentInterface {
  name: string;
  /** Lower-case, or '' when the interface has none (lo). */
  mac: string;
  /** "10.0.0.2/24", "fe80::1/64". */
  addresses: string[];
}

export interface AgentDisk {
  /** /dev/vda. */
  name: string;
  partition: boolean;
  /** "virtio", "scsi", ... as the agent names it; '' when unknown. */
  busType: string;
  /** 0000:00:06.0 of the disk's PCI function (the controller's for SCSI), '' when unknown. */
  pci: string;
  /** "C:T:L" (channel, target, LUN) of a SCSI disk, '' for others: the agent does not give the host number. */
  scsi: string;
}

export interface AgentVcpu {
  logicalId: number;
  online: boolean;
  canOffline: boolean;
}

export interface AgentMemoryBlock {
  physIndex: number;
  online: boolean;
  canOffline: boolean;
}

type Obj = Record<string, unknown>;

function obj(v: unknown, what: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`the guest agent's ${what} is not an object`);
  return v as Obj;
}

function list(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`the guest agent's ${what} is not a list`);
  return v;
}

function str(o: Obj, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== 'string') throw new Error(`the guest agent's ${what} has no string ${key}`);
  return v;
}

function optStr(o: Obj, key: string): string | undefined {
  return typeof o[key] === 'string' ? (o[key] as string) : undefined;
}

function int(o: Obj, key: string, what: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new Error(`the guest agent's ${what} has no integer ${key}`);
  return v;
}

function bool(o: Obj, key: string, what: string): boolean {
  const v = o[key];
  if (typeof v !== 'boolean') throw new Error(`the guest agent's ${what} has no boolean ${key}`);
  return v;
}

export function parseInfo(v: unknown): AgentInfo {
  const o = obj(v, 'guest-info reply');
  const commands = list(o['supported_commands'], 'guest-info command list')
    .map((c) => obj(c, 'guest-info command'))
    .filter((c) => c['enabled'] === true)
    .map((c) => str(c, 'name', 'guest-info command'));
  return { version: str(o, 'version', 'guest-info reply'), commands };
}

export function parseOsInfo(v: unknown): AgentOsInfo {
  const o = obj(v, 'guest-get-osinfo reply');
  const out: AgentOsInfo = {
    kernelRelease: optStr(o, 'kernel-release') ?? '',
    kernelVersion: optStr(o, 'kernel-version') ?? '',
    machine: optStr(o, 'machine') ?? '',
  };
  for (const [key, field] of [['id', 'id'], ['name', 'name'], ['pretty-name', 'prettyName'], ['version', 'version']] as const) {
    const s = optStr(o, key);
    if (s !== undefined) out[field] = s;
  }
  return out;
}

export function parseInterfaces(v: unknown): AgentInterface[] {
  return list(v, 'guest-network-get-interfaces reply').map((i) => {
    const o = obj(i, 'interface');
    const addrs = o['ip-addresses'] === undefined ? [] : list(o['ip-addresses'], 'interface address list');
    return {
      name: str(o, 'name', 'interface'),
      mac: (optStr(o, 'hardware-address') ?? '').toLowerCase(),
      addresses: addrs.map((a) => {
        const ao = obj(a, 'interface address');
        return `${str(ao, 'ip-address', 'interface address')}/${int(ao, 'prefix', 'interface address')}`;
      }),
    };
  });
}

function pciAddress(o: Obj): string {
  const p = obj(o, 'PCI address');
  const hex = (n: number, w: number): string => n.toString(16).padStart(w, '0');
  return `${hex(int(p, 'domain', 'PCI address'), 4)}:${hex(int(p, 'bus', 'PCI address'), 2)}:${hex(int(p, 'slot', 'PCI address'), 2)}.${int(p, 'function', 'PCI address')}`;
}

export function parseDisks(v: unknown): AgentDisk[] {
  return list(v, 'guest-get-disks reply').map((d) => {
    const o = obj(d, 'disk');
    const addr = o['address'] === undefined ? undefined : obj(o['address'], 'disk address');
    const scsi = addr && typeof addr['bus-type'] === 'string' && addr['bus-type'] === 'scsi' && typeof addr['target'] === 'number'
      ? `${int(addr, 'bus', 'disk address')}:${int(addr, 'target', 'disk address')}:${int(addr, 'unit', 'disk address')}`
      : '';
    return {
      name: str(o, 'name', 'disk'),
      partition: o['partition'] === true,
      busType: addr ? optStr(addr, 'bus-type') ?? '' : '',
      pci: addr && addr['pci-controller'] !== undefined ? pciAddress(obj(addr['pci-controller'], 'disk PCI controller')) : '',
      scsi,
    };
  });
}

export function parseVcpus(v: unknown): AgentVcpu[] {
  return list(v, 'guest-get-vcpus reply').map((c) => {
    const o = obj(c, 'vCPU');
    return { logicalId: int(o, 'logical-id', 'vCPU'), online: bool(o, 'online', 'vCPU'), canOffline: o['can-offline'] === true };
  });
}

export function parseMemoryBlocks(v: unknown): AgentMemoryBlock[] {
  return list(v, 'guest-get-memory-blocks reply').map((b) => {
    const o = obj(b, 'memory block');
    return { physIndex: int(o, 'phys-index', 'memory block'), online: bool(o, 'online', 'memory block'), canOffline: o['can-offline'] === true };
  });
}

/** One block's result of guest-set-memory-blocks: "success" or why not. */
export interface MemoryBlockResult {
  physIndex: number;
  response: string;
  errorCode?: number;
}

export function parseMemoryBlockResults(v: unknown): MemoryBlockResult[] {
  return list(v, 'guest-set-memory-blocks reply').map((r) => {
    const o = obj(r, 'memory block result');
    const code = o['error-code'];
    return { physIndex: int(o, 'phys-index', 'memory block result'), response: str(o, 'response', 'memory block result'), ...(typeof code === 'number' ? { errorCode: code } : {}) };
  });
}

/** The typed calls on top of one client. */
export class GuestAgentCalls {
  constructor(readonly agent: GuestAgent) {}

  async info(): Promise<AgentInfo> {
    return parseInfo(await this.agent.execute('guest-info'));
  }

  async osInfo(): Promise<AgentOsInfo> {
    return parseOsInfo(await this.agent.execute('guest-get-osinfo'));
  }

  async interfaces(): Promise<AgentInterface[]> {
    return parseInterfaces(await this.agent.execute('guest-network-get-interfaces'));
  }

  async disks(): Promise<AgentDisk[]> {
    return parseDisks(await this.agent.execute('guest-get-disks'));
  }

  async vcpus(): Promise<AgentVcpu[]> {
    return parseVcpus(await this.agent.execute('guest-get-vcpus'));
  }

  /** Brings the given vCPUs on- or offline; resolves with how many the guest changed (it stops at the first failure). */
  async setVcpus(vcpus: Array<{ logicalId: number; online: boolean }>, timeoutMs = 10_000): Promise<number> {
    const n = await this.agent.execute('guest-set-vcpus', { vcpus: vcpus.map((c) => ({ 'logical-id': c.logicalId, online: c.online })) }, timeoutMs);
    if (typeof n !== 'number') throw new Error('the guest agent answered guest-set-vcpus without a count');
    return n;
  }

  async memoryBlocks(): Promise<AgentMemoryBlock[]> {
    return parseMemoryBlocks(await this.agent.execute('guest-get-memory-blocks'));
  }

  async memoryBlockSize(): Promise<number> {
    const o = obj(await this.agent.execute('guest-get-memory-block-info'), 'guest-get-memory-block-info reply');
    return int(o, 'size', 'guest-get-memory-block-info reply');
  }

  async setMemoryBlocks(blocks: Array<{ physIndex: number; online: boolean }>, timeoutMs = 10_000): Promise<MemoryBlockResult[]> {
    return parseMemoryBlockResults(
      await this.agent.execute('guest-set-memory-blocks', { 'mem-blks': blocks.map((b) => ({ 'phys-index': b.physIndex, online: b.online })) }, timeoutMs),
    );
  }
}
