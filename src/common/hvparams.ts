/**
 * The hvparams schema: every hypervisor parameter this software knows, with
 * the one rule its value must follow. A key not listed is refused (as
 * Ganeti refuses unknown hvparams). Pure and shared: the master checks an
 * instance's hvparams when it is added, the node checks them again before
 * any side effect (InstanceStart, a carried runtime file), since values end
 * up inside QEMU option strings.
 *
 * Keys marked `node` are written by the node itself into the runtime file
 * (the uid it chose from its pool); a client may not set them.
 */
import { excerpt } from './excerpt';

export type HvRule =
  | { kind: 'enum'; values: readonly string[] }
  | { kind: 'user' }
  | { kind: 'path' }
  | { kind: 'machine' }
  | { kind: 'int'; min: number; max: number; unit: string }
  | { kind: 'seconds'; min: number; max: number };

export interface HvKey {
  rule: HvRule;
  /** What the parameter does, for error messages and docs. */
  doc: string;
  /** Set by the node only (recorded in the runtime file), never by a client. */
  node?: boolean;
}

export const SECURITY_MODELS = ['none', 'user', 'pool'] as const;
export type SecurityModel = (typeof SECURITY_MODELS)[number];

/** A Unix user name as useradd accepts it by default. */
export const USER_NAME_RULE = /^[a-z_][a-z0-9_-]{0,31}$/;
/** A QEMU machine type: pc, q35, pc-q35-10.0, pc-i440fx-9.2 ... */
export const MACHINE_RULE = /^[a-z][a-z0-9._-]{0,63}$/;

const seconds: HvRule = { kind: 'seconds', min: 0, max: 3600 };

/** A q35 machine type (q35, pc-q35-10.0): PCI Express, root ports instead of bridges. */
export const isQ35Machine = (machine: string): boolean => /(^|-)q35(-|$)/.test(machine);

/** The PCI tree's sizes (src/hypervisor/pci-topology.ts). */
export const HVPARAM_LIMITS = {
  pci_bridges: { min: 0, max: 8 },
  pcie_root_ports: { min: 0, max: 64 },
} as const;

export const HVPARAMS: Readonly<Record<string, HvKey>> = {
  machine: { rule: { kind: 'machine' }, doc: 'QEMU machine type (-machine)' },
  accel: { rule: { kind: 'enum', values: ['tcg', 'kvm'] }, doc: 'accelerator (-accel)' },
  memory_hotplug: { rule: { kind: 'enum', values: ['acpi', 'virtio-mem', 'none'] }, doc: 'how memory is hot-added' },
  security_model: { rule: { kind: 'enum', values: SECURITY_MODELS }, doc: 'who QEMU runs as: none (root), user (security_domain or the node\'s QEMU user), pool (a uid from the node\'s pool)' },
  security_domain: { rule: { kind: 'user' }, doc: 'the user QEMU runs as with security_model=user' },
  chroot: { rule: { kind: 'path' }, doc: 'directory QEMU chroots into after start' },
  migration_bandwidth: { rule: { kind: 'int', min: 0, max: 999_999_999, unit: 'MiB/s; 0: QEMU\'s default' }, doc: 'live migration bandwidth' },
  migration_downtime: { rule: { kind: 'int', min: 0, max: 999_999_999, unit: 'ms; 0: QEMU\'s default' }, doc: 'live migration downtime limit' },
  unplug_timeout_nic: { rule: seconds, doc: 'seconds the guest has to release a NIC' },
  unplug_timeout_disk: { rule: seconds, doc: 'seconds the guest has to release a disk' },
  unplug_timeout_cpu: { rule: seconds, doc: 'seconds the guest has to release a vCPU' },
  unplug_timeout_memory: { rule: seconds, doc: 'seconds the guest has to release memory' },
  pci_bridges: { rule: { kind: 'int', ...HVPARAM_LIMITS.pci_bridges, unit: 'pci-bridge devices of 32 slots each, pc machines; default 2' }, doc: 'spare PCI buses for hotplug beyond bus 0' },
  pcie_root_ports: { rule: { kind: 'int', ...HVPARAM_LIMITS.pcie_root_ports, unit: 'pcie-root-port devices, q35 machines; default: one per device at start plus 3 free (up to 32 in all above 2 GiB maxmem)' }, doc: 'PCIe root ports, one hot-added device each' },
  security_uid: { rule: { kind: 'int', min: 1, max: 4_294_967_294, unit: 'uid' }, doc: 'the pool uid the node chose', node: true },
};

/** Keys a client may set (gnt-instance add -H, InstanceStart). */
export const CLIENT_HVPARAM_KEYS: readonly string[] = Object.keys(HVPARAMS).filter((k) => !HVPARAMS[k].node);

function ruleText(rule: HvRule): string {
  switch (rule.kind) {
    case 'enum':
      return `one of ${rule.values.join(', ')}`;
    case 'user':
      return 'a user name (lower-case letter or "_", then up to 31 lower-case letters, digits, "_" or "-")';
    case 'path':
      return 'an absolute path without ",", "..", NUL or newline';
    case 'machine':
      return 'a QEMU machine type name (lower-case letters, digits, ".", "_", "-"; e.g. pc or q35)';
    case 'int':
      return `a whole number from ${rule.min} to ${rule.max} (${rule.unit})`;
    case 'seconds':
      return `a number of seconds above ${rule.min} and at most ${rule.max}`;
  }
}

function fits(rule: HvRule, v: string): boolean {
  switch (rule.kind) {
    case 'enum':
      return rule.values.includes(v);
    case 'user':
      return USER_NAME_RULE.test(v);
    case 'path':
      return v.startsWith('/') && !/[,\0\n]/.test(v) && !v.split('/').includes('..') && v.length <= 4096;
    case 'machine':
      return MACHINE_RULE.test(v);
    case 'int':
      return /^\d{1,10}$/.test(v) && Number(v) >= rule.min && Number(v) <= rule.max;
    case 'seconds':
      return /^\d{1,4}(\.\d{1,3})?$/.test(v) && Number(v) > rule.min && Number(v) <= rule.max;
  }
}

/** Why `key=value` is not acceptable, or undefined. `client`: node-only keys are refused too. */
export function hvparamProblem(key: string, value: unknown, client: boolean): string | undefined {
  const spec = Object.prototype.hasOwnProperty.call(HVPARAMS, key) ? HVPARAMS[key] : undefined;
  if (!spec) return `unknown hvparam ${excerpt(key)} (known: ${CLIENT_HVPARAM_KEYS.join(', ')})`;
  if (client && spec.node) return `hvparam ${key} is set by the node itself and cannot be given`;
  if (typeof value !== 'string' && typeof value !== 'number') return `hvparam ${key} must be a string, not ${excerpt(value)}`;
  const text = String(value);
  if (!fits(spec.rule, text)) return `hvparam ${key}=${excerpt(text)} is not valid: it must be ${ruleText(spec.rule)}`;
  return undefined;
}

/** Rules between keys: security_domain only with the user model, chroot not with root. */
function combinationProblem(hv: Readonly<Record<string, unknown>>): string | undefined {
  const model = hv.security_model;
  if (hv.security_domain !== undefined && model !== undefined && model !== 'user')
    return `hvparam security_domain is only used with security_model=user, not with security_model=${String(model)}`;
  if (hv.security_uid !== undefined && model !== 'pool') return 'hvparam security_uid is only used with security_model=pool';
  if (hv.chroot !== undefined && model === 'none') return 'hvparam chroot needs an unprivileged security_model (user or pool), not none';
  // Only where the machine is given (a client's map); a runtime file's fixed command names it, and pci-topology.ts checks that.
  if (typeof hv.machine !== 'string') return undefined;
  const q35 = isQ35Machine(hv.machine);
  if (hv.pci_bridges !== undefined && q35) return 'hvparam pci_bridges is for pc machines; a q35 machine gets pcie_root_ports';
  if (hv.pcie_root_ports !== undefined && !q35) return 'hvparam pcie_root_ports is for q35 machines (-H machine=q35); a pc machine gets pci_bridges';
  return undefined;
}

/**
 * Checks a whole hvparams map; throws `fail(message)` at the first problem,
 * naming the key and the rule. `client`: the map comes from a client
 * (refuses node-only keys); false for a runtime file the node wrote.
 */
export function checkHvparams(hv: Readonly<Record<string, unknown>>, fail: (message: string) => Error, client = true): void {
  for (const [k, v] of Object.entries(hv)) {
    const problem = hvparamProblem(k, v, client);
    if (problem) throw fail(problem);
  }
  const problem = combinationProblem(hv);
  if (problem) throw fail(problem);
}
