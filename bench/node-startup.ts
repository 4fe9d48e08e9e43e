/** The reference for the CLI's own cost: how long a bare `node -e 0` takes from spawn to exit on this machine. */
import { spawn } from 'node:child_process';
import type { Recorder } from './stats';

export const NODE_STARTUP = 'reference';
export const NODE_STARTUP_OP = 'node start-up (node -e 0)';

function runNode(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', () => resolve());
  });
}

export async function benchNodeStartup(rec: Recorder, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await rec.time(NODE_STARTUP, NODE_STARTUP_OP, runNode);
}
