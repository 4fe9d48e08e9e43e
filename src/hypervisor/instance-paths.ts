/** Where an instance's files live under a node's data directory. */
import * as path from 'node:path';
import { InvalidArgumentError } from './errors';
import type { NodePaths } from './qemu-command';

export interface InstancePaths extends NodePaths {
  dir: string;
  runtimeFile: string;
  qemuLog: string;
  /** Host end of the guest agent's virtio-serial port (guest-agent-channel.ts). */
  agentSocket: string;
}

const NAME_RULE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Instance names become directory names: no "/", "..", spaces or shell characters. */
export function assertInstanceName(name: string): string {
  if (!NAME_RULE.test(name) || name.includes('..'))
    throw new InvalidArgumentError(
      `instance name "${name}" is not valid: use 1 to 63 letters, digits, ".", "_" or "-", starting with a letter or digit, without ".."`,
    );
  return name;
}

export function instancePaths(dataDir: string, name: string): InstancePaths {
  const dir = path.join(dataDir, assertInstanceName(name));
  return {
    dir,
    runtimeFile: path.join(dir, 'runtime.json'),
    qmpSocket: path.join(dir, 'qmp.sock'),
    testQmpSocket: path.join(dir, 'qmp-test.sock'),
    consoleLog: path.join(dir, 'console.log'),
    consoleSocket: path.join(dir, 'console.sock'),
    pidFile: path.join(dir, 'qemu.pid'),
    qemuLog: path.join(dir, 'qemu.log'),
    agentSocket: path.join(dir, 'qga.sock'),
  };
}
