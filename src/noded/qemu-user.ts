/**
 * Who QEMU runs as (the node's privilege model). A new instance runs as an
 * unprivileged user under the seccomp sandbox unless its hvparams say
 * security_model=none:
 *   - user: one dedicated user (gnt-noded --qemu-user, default gnt-qemu),
 *     or the instance's security_domain;
 *   - pool: a uid of its own from the node's pool (gnt-noded --uid-pool
 *     START-END), chosen here among the uids no other instance of this node
 *     holds, as Ganeti's uid pool. With a pool configured it is the default.
 * The choice is written into the instance's hvparams in its runtime file
 * (security_model, security_domain or security_uid), so a restart keeps it.
 * A runtime file from before this rule has no security_model: its QEMU was
 * started as root and keeps running so; its next InstanceStart applies the
 * default.
 */
import { USER_NAME_RULE, type SecurityModel } from '../common/hvparams';
import { excerpt } from '../common/excerpt';
import type { HvParams, RuntimeData } from '../hypervisor/runtime-file';
import type { InstanceRegistry } from './instance-registry';
import { failedPrecondition, resourceExhausted } from './status';

export const DEFAULT_QEMU_USER = 'gnt-qemu';
const MAX_UID = 4_294_967_294;

export interface UidRange {
  start: number;
  end: number;
}

export interface QemuPrivilege {
  /** The dedicated user of security_model=user (--qemu-user). */
  user: string;
  /** The uid pool of security_model=pool (--uid-pool), if configured. */
  uidPool?: UidRange;
}

/** --qemu-user NAME. */
export function parseQemuUser(text: string, what = '--qemu-user'): string {
  if (!USER_NAME_RULE.test(text) || text === 'root') throw new Error(`${what} ${excerpt(text)} is not an unprivileged user name (lower-case letters, digits, "_", "-"; not root)`);
  return text;
}

/** --uid-pool START-END: uids QEMU may run as, one per instance (not 0, at most 65536 of them). */
export function parseUidPool(text: string, what = '--uid-pool'): UidRange {
  const m = /^(\d{1,10})-(\d{1,10})$/.exec(text.trim());
  const start = m ? Number(m[1]) : NaN;
  const end = m ? Number(m[2]) : NaN;
  if (!m || start < 1 || end > MAX_UID || start > end || end - start >= 65536)
    throw new Error(`${what} ${excerpt(text)} is not valid: write START-END, uids from 1 to ${MAX_UID}, START <= END, at most 65536 uids (e.g. 40000-40999)`);
  return { start, end };
}

/** The model of a start whose hvparams name none. */
export const defaultModel = (p: QemuPrivilege): SecurityModel => (p.uidPool ? 'pool' : 'user');

const SECURITY_KEYS = ['security_model', 'security_domain', 'security_uid'] as const;

/** The lowest free uid of the pool; `preferred` first when it is free. */
export function chooseUid(pool: UidRange, used: ReadonlySet<number>, instance: string, preferred?: number): number {
  if (preferred !== undefined && preferred >= pool.start && preferred <= pool.end && !used.has(preferred)) return preferred;
  for (let uid = pool.start; uid <= pool.end; uid++) if (!used.has(uid)) return uid;
  throw resourceExhausted(`the uid pool ${pool.start}-${pool.end} of this node is used up: no uid left for instance ${instance} (widen --uid-pool)`);
}

function poolOf(p: QemuPrivilege, instance: string): UidRange {
  if (!p.uidPool) throw failedPrecondition(`instance ${instance} asks for security_model=pool, but this node has no uid pool (start gnt-noded with --uid-pool START-END)`);
  return p.uidPool;
}

const recordedUid = (hv: HvParams | undefined): number | undefined =>
  hv?.security_model === 'pool' && hv.security_uid !== undefined ? Number(hv.security_uid) : undefined;

/**
 * Pure: the hvparams of a start with its security keys settled. An explicit
 * security_model wins; none given, a recorded one is kept (restart), else
 * the node's default. `used`: the pool uids other instances hold.
 */
export function resolveSecurity(
  instance: string,
  requested: HvParams,
  recorded: HvParams | undefined,
  p: QemuPrivilege,
  used: ReadonlySet<number>,
): HvParams {
  const out: HvParams = { ...requested };
  for (const k of SECURITY_KEYS) delete out[k];
  let model = requested.security_model as SecurityModel | undefined;
  let domain = requested.security_domain as string | undefined;
  if (model === undefined && domain !== undefined) model = 'user';
  if (model === undefined && typeof recorded?.security_model === 'string') {
    model = recorded.security_model as SecurityModel;
    domain = recorded.security_domain as string | undefined;
  }
  model ??= defaultModel(p);
  out.security_model = model;
  if (model === 'user') out.security_domain = domain ?? p.user;
  if (model === 'pool') out.security_uid = chooseUid(poolOf(p, instance), used, instance, recordedUid(recorded));
  return out;
}

/** The node's side of the model: pool uids in use, and reservations of starts in flight. */
export class QemuSecurity {
  /** uid handed to a start or receive of this name that may not be in the registry yet. */
  private readonly reserved = new Map<string, number>();

  constructor(
    readonly privilege: QemuPrivilege,
    private readonly registry: InstanceRegistry,
  ) {}

  private usedByOthers(instance: string): Set<number> {
    const used = new Set<number>();
    for (const inst of this.registry.all()) {
      if (inst.name === instance) continue;
      const uid = recordedUid(inst.runtime.hvparams);
      if (uid !== undefined) used.add(uid);
    }
    for (const [name, uid] of this.reserved) {
      if (name === instance) continue;
      if (this.registry.find(name)) this.reserved.delete(name); // its runtime file counts now
      else used.add(uid);
    }
    return used;
  }

  private reserve(instance: string, hv: HvParams): HvParams {
    const uid = recordedUid(hv);
    if (uid === undefined) this.reserved.delete(instance);
    else this.reserved.set(instance, uid);
    return hv;
  }

  /** The hvparams an InstanceStart records and starts with. */
  forStart(instance: string, requested: HvParams): HvParams {
    const recorded = this.registry.find(instance)?.runtime.hvparams;
    return this.reserve(instance, resolveSecurity(instance, requested, recorded, this.privilege, this.usedByOthers(instance)));
  }

  /** Drops the reservation of a start that has finished (its runtime file, if any, holds the uid now). */
  release(instance: string): void {
    this.reserved.delete(instance);
  }

  /** A carried runtime file (migration target, failover) keeps its model; a pool uid is this node's own choice. */
  forCarried(data: RuntimeData): RuntimeData {
    if (data.hvparams.security_model !== 'pool') return data;
    const hv = { ...data.hvparams };
    hv.security_uid = chooseUid(poolOf(this.privilege, data.instance), this.usedByOthers(data.instance), data.instance);
    return { ...data, hvparams: this.reserve(data.instance, hv) };
  }
}
