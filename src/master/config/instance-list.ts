/**
 * The instance list as the `gnt-instance list` table shows it (issue 14):
 * one query for every instance, with its node's name and its device counts
 * computed by SQLite, and no device rows, hvparams or other fields.
 */
import type { Db } from './db';

export interface InstanceSummaryRow {
  name: string;
  node: string;
  admin_state: 'up' | 'down';
  vcpus: number;
  maxvcpus: number;
  memory_mib: number;
  maxmem_mib: number;
  nic_count: number;
  disk_count: number;
  nics_removal_pending: number;
  disks_removal_pending: number;
}

const SQL = `
  SELECT i.name, n.name AS node, i.admin_state, i.vcpus, i.maxvcpus, i.memory_mib, i.maxmem_mib,
         COALESCE(nc.total, 0) AS nic_count, COALESCE(dc.total, 0) AS disk_count,
         COALESCE(nc.pending, 0) AS nics_removal_pending, COALESCE(dc.pending, 0) AS disks_removal_pending
  FROM instances i
  JOIN nodes n ON n.uuid = i.node_uuid
  LEFT JOIN (SELECT instance_uuid, COUNT(*) AS total, SUM(removal_pending != '') AS pending FROM nics GROUP BY instance_uuid) nc
    ON nc.instance_uuid = i.uuid
  LEFT JOIN (SELECT instance_uuid, COUNT(*) AS total, SUM(removal_pending != '') AS pending FROM disks GROUP BY instance_uuid) dc
    ON dc.instance_uuid = i.uuid
  ORDER BY i.name`;

/** Every instance, by name, with what the list table shows. */
export function listInstanceSummaries(db: Db): InstanceSummaryRow[] {
  return db.prepare(SQL).all() as InstanceSummaryRow[];
}
