/**
 * What the installed QEMU binary supports, read once per binary from its
 * `--version` and `-help` output (QEMU 10 dropped -runas/-chroot for -run-with).
 */
import { execFileSync } from 'node:child_process';

export interface QemuFeatures {
  binary: string;
  version: { major: number; minor: number; micro: number };
  runWith: boolean;
  sandbox: boolean;
}

const cache = new Map<string, QemuFeatures>();

export const DEFAULT_QEMU = 'qemu-system-x86_64';

export function qemuFeatures(binary = DEFAULT_QEMU): QemuFeatures {
  const known = cache.get(binary);
  if (known) return known;
  const versionText = execFileSync(binary, ['--version'], { encoding: 'utf8' });
  const m = /version (\d+)\.(\d+)\.(\d+)/.exec(versionText);
  if (!m) throw new Error(`cannot read the version of ${binary} from: ${versionText.split('\n')[0]}`);
  const help = execFileSync(binary, ['-help'], { encoding: 'utf8', maxBuffer: 8 << 20 });
  const features: QemuFeatures = {
    binary,
    version: { major: Number(m[1]), minor: Number(m[2]), micro: Number(m[3]) },
    runWith: /^-run-with\b/m.test(help),
    sandbox: /^-sandbox\b/m.test(help),
  };
  cache.set(binary, features);
  return features;
}
