/**
 * Repositories for the cluster configuration: nodes, instances and their
 * devices. Device order is `idx` (0-based, as Ganeti's device index); it is
 * kept dense, so removing device N renumbers the ones after it.
 */
import { randomUUID } from 'node:crypto';
import { nowIso, type Db } from './db';
import { randomMac } from '../validate';

export interface NodeRow {
  uuid: string;
  name: string;
  address: string;
  created_at: string;
  /** SHA-256 of the node's certificate (AB:CD:...), '' before schema 5 (config/cert-store.ts). */
  cert_fingerprint?: string;
}

/** A NIC's live parameters (src/common/nic-params.ts). */
export interface NicParams {
  link_state: string;
  rate_mbit: number;
  queues: number;
  model: string;
}

export const DEFAULT_NIC_PARAMS: NicParams = { link_state: 'up', rate_mbit: 0, queues: 1, model: 'virtio' };

export interface NicRow extends NicParams {
  uuid: string;
  idx: number;
  mac: string;
  link: string;
  /** The id of the operation whose removal the guest has not acknowledged yet; '' none. */
  removal_pending: string;
}

export interface DiskRow {
  uuid: string;
  idx: number;
  size_bytes: number;
  /** As in NicRow. */
  removal_pending: string;
  /** '' (virtio-blk) or 'scsi' (src/common/disk-flavour.ts). */
  disk_bus: string;
  /** '' (a block device) or 'pmem'. */
  disk_type: string;
  /** '' (file), 'blockdev' or 'rbd'. */
  template: string;
  /** '' (made by the node) or what it adopted: '/dev/XYZ', 'POOL/IMAGE'. */
  adopt: string;
}

/** A disk's bus, type, template and adopted backing as stored ('' for the defaults). */
export interface DiskFlavourRow {
  diskBus?: string;
  diskType?: string;
  template?: string;
  adopt?: string;
}

export type DeviceTable = 'nics' | 'disks';

export interface InstanceRow {
  uuid: string;
  name: string;
  node_uuid: string;
  vcpus: number;
  maxvcpus: number;
  memory_mib: number;
  maxmem_mib: number;
  kernel: string;
  initrd: string;
  kernel_args: string;
  hvparams: string;
  admin_state: 'up' | 'down';
  created_at: string;
}

export interface InstanceConfig extends Omit<InstanceRow, 'hvparams'> {
  hvparams: Record<string, string>;
  node: NodeRow;
  nics: NicRow[];
  disks: DiskRow[];
}

export interface NewInstance {
  name: string;
  nodeUuid: string;
  vcpus: number;
  maxvcpus: number;
  memoryMib: number;
  maxmemMib: number;
  kernel: string;
  initrd: string;
  kernelArgs: string;
  hvparams: Record<string, string>;
  nics: ({ mac: string; link: string } & Partial<NicParams>)[];
  disks: ({ sizeBytes: number } & DiskFlavourRow)[];
}

/** The parameters with defaults for what is not given ('' or 0 = default). */
export function nicParams(p: Partial<NicParams>): NicParams {
  return {
    link_state: p.link_state || DEFAULT_NIC_PARAMS.link_state,
    rate_mbit: p.rate_mbit ?? 0,
    queues: p.queues || 1,
    model: p.model || DEFAULT_NIC_PARAMS.model,
  };
}

interface Owned {
  instance_uuid: string;
}

/** Device rows by instance, in the order given, without the instance_uuid column. */
function groupBy<T extends Owned>(rows: T[]): Map<string, Omit<T, 'instance_uuid'>[]> {
  const out = new Map<string, Omit<T, 'instance_uuid'>[]>();
  for (const { instance_uuid, ...rest } of rows) {
    const list = out.get(instance_uuid);
    if (list) list.push(rest);
    else out.set(instance_uuid, [rest]);
  }
  return out;
}

export class ConfigError extends Error {
  constructor(
    message: string,
    readonly code: 'NOT_FOUND' | 'ALREADY_EXISTS' | 'INVALID_ARGUMENT' | 'FAILED_PRECONDITION' = 'INVALID_ARGUMENT',
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

export class ConfigStore {
  constructor(readonly db: Db) {}

  // ---- cluster ----

  getClusterValue(key: string): string | undefined {
    const row = this.db.prepare('SELECT value FROM cluster WHERE key = ?').get(key) as { value: string } | undefined;
    return row?.value;
  }

  setClusterValue(key: string, value: string): void {
    this.db.prepare('INSERT INTO cluster (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  // ---- nodes ----

  listNodes(): (NodeRow & { instance_count: number })[] {
    return this.db
      .prepare(
        `SELECT n.*, (SELECT COUNT(*) FROM instances i WHERE i.node_uuid = n.uuid) AS instance_count
         FROM nodes n ORDER BY n.name`,
      )
      .all() as (NodeRow & { instance_count: number })[];
  }

  findNode(name: string): NodeRow | undefined {
    return this.db.prepare('SELECT * FROM nodes WHERE name = ?').get(name) as NodeRow | undefined;
  }

  getNode(name: string): NodeRow {
    const node = this.findNode(name);
    if (!node) throw new ConfigError(`node "${name}" is unknown`, 'NOT_FOUND');
    return node;
  }

  addNode(name: string, address: string): NodeRow {
    if (this.findNode(name)) throw new ConfigError(`node "${name}" already exists`, 'ALREADY_EXISTS');
    const other = this.db.prepare('SELECT name FROM nodes WHERE address = ?').get(address) as { name: string } | undefined;
    if (other) throw new ConfigError(`address ${address} is already used by node "${other.name}"`, 'ALREADY_EXISTS');
    const row: NodeRow = { uuid: randomUUID(), name, address, created_at: nowIso() };
    this.db.prepare('INSERT INTO nodes (uuid, name, address, created_at) VALUES (@uuid, @name, @address, @created_at)').run(row);
    return row;
  }

  // ---- instances ----

  /** Every instance with its node and devices: four queries, whatever the number of instances. */
  listInstances(): InstanceConfig[] {
    const rows = this.db.prepare('SELECT * FROM instances ORDER BY name').all() as InstanceRow[];
    const nodes = new Map((this.db.prepare('SELECT * FROM nodes').all() as NodeRow[]).map((n) => [n.uuid, n]));
    const nics = groupBy(this.db.prepare('SELECT instance_uuid, uuid, idx, mac, link, removal_pending, link_state, rate_mbit, queues, model FROM nics ORDER BY instance_uuid, idx').all() as (NicRow & Owned)[]);
    const disks = groupBy(this.db.prepare('SELECT instance_uuid, uuid, idx, size_bytes, removal_pending, disk_bus, disk_type, template, adopt FROM disks ORDER BY instance_uuid, idx').all() as (DiskRow & Owned)[]);
    // completed in place: copying 10,000 rows into new objects costs more than the queries
    return rows.map((row) => Object.assign(row, {
      hvparams: JSON.parse(row.hvparams) as Record<string, string>,
      node: nodes.get(row.node_uuid) as NodeRow,
      nics: nics.get(row.uuid) ?? [],
      disks: disks.get(row.uuid) ?? [],
    }));
  }

  findInstance(name: string): InstanceConfig | undefined {
    const row = this.db.prepare('SELECT * FROM instances WHERE name = ?').get(name) as InstanceRow | undefined;
    return row && this.expand(row);
  }

  getInstance(name: string): InstanceConfig {
    const inst = this.findInstance(name);
    if (!inst) throw new ConfigError(`instance "${name}" is unknown`, 'NOT_FOUND');
    return inst;
  }

  private expand(row: InstanceRow): InstanceConfig {
    const node = this.db.prepare('SELECT * FROM nodes WHERE uuid = ?').get(row.node_uuid) as NodeRow;
    return {
      ...row,
      hvparams: JSON.parse(row.hvparams) as Record<string, string>,
      node,
      nics: this.db.prepare('SELECT uuid, idx, mac, link, removal_pending, link_state, rate_mbit, queues, model FROM nics WHERE instance_uuid = ? ORDER BY idx').all(row.uuid) as NicRow[],
      disks: this.db.prepare('SELECT uuid, idx, size_bytes, removal_pending, disk_bus, disk_type, template, adopt FROM disks WHERE instance_uuid = ? ORDER BY idx').all(row.uuid) as DiskRow[],
    };
  }

  macInUse(mac: string): boolean {
    return this.db.prepare('SELECT 1 FROM nics WHERE mac = ?').get(mac) !== undefined;
  }

  /**
   * Whether a new change may not take this MAC: a NIC has it, or an
   * operation whose outcome is not known yet (state 'sent') gives it to a
   * NIC when it settles.
   */
  macTaken(mac: string): boolean {
    return (
      this.macInUse(mac) ||
      this.db
        .prepare(`SELECT 1 FROM operations WHERE state = 'sent' AND kind = 'nic' AND json_extract(change_json, '$.mac') = ?`)
        .get(mac) !== undefined
    );
  }

  /** Whether a NIC or disk with this uuid is in the configuration. */
  hasDevice(table: DeviceTable, uuid: string): boolean {
    return this.db.prepare(`SELECT 1 FROM ${table} WHERE uuid = ?`).get(uuid) !== undefined;
  }

  /** Marks a device as "removal pending" under operation `opId` ('' clears the mark). */
  setRemovalPending(table: DeviceTable, uuid: string, opId: string): void {
    this.db.prepare(`UPDATE ${table} SET removal_pending = ? WHERE uuid = ?`).run(opId, uuid);
  }

  /** A 52:54:00 MAC used by no NIC and not in `reserved`. */
  generateMac(reserved: ReadonlySet<string> = new Set()): string {
    for (let i = 0; i < 1000; i++) {
      const mac = randomMac();
      if (!reserved.has(mac) && !this.macTaken(mac)) return mac;
    }
    throw new ConfigError('could not find a free MAC address in 52:54:00:xx:xx:xx', 'FAILED_PRECONDITION');
  }

  /** Inserts the instance and its devices in one transaction; uuids are made here. */
  addInstance(spec: NewInstance): InstanceConfig {
    const uuid = randomUUID();
    this.db.transaction(() => {
      if (this.findInstance(spec.name)) throw new ConfigError(`instance "${spec.name}" already exists`, 'ALREADY_EXISTS');
      this.db
        .prepare(
          `INSERT INTO instances (uuid, name, node_uuid, vcpus, maxvcpus, memory_mib, maxmem_mib, kernel, initrd,
             kernel_args, hvparams, admin_state, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'down', ?)`,
        )
        .run(uuid, spec.name, spec.nodeUuid, spec.vcpus, spec.maxvcpus, spec.memoryMib, spec.maxmemMib, spec.kernel,
          spec.initrd, spec.kernelArgs, JSON.stringify(spec.hvparams), nowIso());
      spec.nics.forEach((n, idx) => this.insertNic(uuid, idx, randomUUID(), n.mac, n.link, n));
      spec.disks.forEach((d, idx) => this.insertDisk(uuid, idx, randomUUID(), d.sizeBytes, d));
    })();
    return this.getInstance(spec.name);
  }

  removeInstance(name: string): void {
    this.db.prepare('DELETE FROM instances WHERE name = ?').run(name);
  }

  /** Commits a vCPU and memory change (the limits were checked by the caller; the schema checks them again). */
  setResources(name: string, vcpus: number, memoryMib: number): void {
    this.db.prepare('UPDATE instances SET vcpus = ?, memory_mib = ? WHERE name = ?').run(vcpus, memoryMib, name);
  }

  /**
   * Makes `nodeName` the instance's primary node, in one transaction (after
   * a migration or failover). Returns the updated instance.
   */
  setPrimaryNode(instanceName: string, nodeName: string): InstanceConfig {
    return this.db.transaction(() => {
      const inst = this.getInstance(instanceName);
      const node = this.getNode(nodeName);
      this.db.prepare('UPDATE instances SET node_uuid = ? WHERE uuid = ?').run(node.uuid, inst.uuid);
      return this.getInstance(instanceName);
    })();
  }

  setAdminState(name: string, state: 'up' | 'down'): void {
    this.db.prepare('UPDATE instances SET admin_state = ? WHERE name = ?').run(state, name);
  }

  private insertNic(instanceUuid: string, idx: number, uuid: string, mac: string, link: string, params: Partial<NicParams> = {}): void {
    if (this.macInUse(mac)) throw new ConfigError(`MAC address ${mac} is already used in the cluster`, 'ALREADY_EXISTS');
    const p = nicParams(params);
    this.db
      .prepare('INSERT INTO nics (uuid, instance_uuid, idx, mac, link, link_state, rate_mbit, queues, model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)')
      .run(uuid, instanceUuid, idx, mac, link, p.link_state, p.rate_mbit, p.queues, p.model);
  }

  private insertDisk(instanceUuid: string, idx: number, uuid: string, sizeBytes: number, flavour: DiskFlavourRow = {}): void {
    if (flavour.adopt && this.db.prepare('SELECT 1 FROM disks WHERE adopt = ? AND template = ?').get(flavour.adopt, flavour.template ?? ''))
      throw new ConfigError(`${flavour.adopt} is already adopted by a disk of the cluster`, 'ALREADY_EXISTS');
    this.db
      .prepare('INSERT INTO disks (uuid, instance_uuid, idx, size_bytes, disk_bus, disk_type, template, adopt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(uuid, instanceUuid, idx, sizeBytes, flavour.diskBus ?? '', flavour.diskType ?? '', flavour.template ?? '', flavour.adopt ?? '');
  }

  /** Appends a NIC with the given uuid (made by the caller, the master) at the end. */
  appendNic(instanceUuid: string, uuid: string, mac: string, link: string, params: Partial<NicParams> = {}): void {
    this.db.transaction(() => {
      const { n } = this.db.prepare('SELECT COUNT(*) AS n FROM nics WHERE instance_uuid = ?').get(instanceUuid) as { n: number };
      this.insertNic(instanceUuid, n, uuid, mac, link, params);
    })();
  }

  appendDisk(instanceUuid: string, uuid: string, sizeBytes: number, flavour: DiskFlavourRow = {}): void {
    this.db.transaction(() => {
      const { n } = this.db.prepare('SELECT COUNT(*) AS n FROM disks WHERE instance_uuid = ?').get(instanceUuid) as { n: number };
      this.insertDisk(instanceUuid, n, uuid, sizeBytes, flavour);
    })();
  }

  /** A NIC's new MAC, link and (when given) live parameters; the queues never change. */
  modifyNic(uuid: string, mac: string, link: string, params?: Omit<NicParams, 'queues'>): void {
    this.db.transaction(() => {
      const other = this.db.prepare('SELECT uuid FROM nics WHERE mac = ? AND uuid != ?').get(mac, uuid);
      if (other) throw new ConfigError(`MAC address ${mac} is already used in the cluster`, 'ALREADY_EXISTS');
      this.db.prepare('UPDATE nics SET mac = ?, link = ? WHERE uuid = ?').run(mac, link, uuid);
      if (params)
        this.db.prepare('UPDATE nics SET link_state = ?, rate_mbit = ?, model = ? WHERE uuid = ?').run(params.link_state, params.rate_mbit, params.model, uuid);
    })();
  }

  removeDevice(table: DeviceTable, uuid: string): void {
    this.db.transaction(() => {
      const row = this.db.prepare(`SELECT instance_uuid, idx FROM ${table} WHERE uuid = ?`).get(uuid) as
        | { instance_uuid: string; idx: number }
        | undefined;
      if (!row) return;
      this.db.prepare(`DELETE FROM ${table} WHERE uuid = ?`).run(uuid);
      this.db.prepare(`UPDATE ${table} SET idx = idx - 1 WHERE instance_uuid = ? AND idx > ?`).run(row.instance_uuid, row.idx);
    })();
  }
}
