/**
 * The kinds of change a modify job makes, mapped to their modules. A new
 * kind is a module in this folder implementing ChangeKind and one line in
 * Kinds, REGISTRY and CHANGE_ORDER; the modify job (jobs/modify.ts) and the
 * settling of operations (jobs/operations.ts) then handle it.
 */
import type { ChangeKind } from './change-kind';
import { diskChanges, type DiskChange } from './disk';
import type { DeviceTypes } from './hotplug';
import { nicChanges, type NicChange } from './nic';
import { resourcesChanges, type ResourcesTypes } from './resources';

interface Kinds {
  resources: ResourcesTypes;
  nic: DeviceTypes<NicChange>;
  disk: DeviceTypes<DiskChange>;
}

export type ChangeKindName = keyof Kinds;
export type ChangeModule<K extends ChangeKindName> = ChangeKind<Kinds[K]>;
export type StepOf<K extends ChangeKindName> = Kinds[K]['step'];
export type ChangeOf<K extends ChangeKindName> = Kinds[K]['change'];

/** One planned change of a modify job, of any kind (discriminated by `kind`). */
export type ModifyStep = StepOf<ChangeKindName>;
/** The configuration change an operation commits when it succeeds (stored as change_json). */
export type OpChange = ChangeOf<ChangeKindName>;

const REGISTRY: { [K in ChangeKindName]: ChangeModule<K> } = {
  resources: resourcesChanges,
  nic: nicChanges,
  disk: diskChanges,
};

/** The order a modify job plans and runs its changes in: -B first, then --net, then --disk. */
export const CHANGE_ORDER: readonly ChangeKindName[] = ['resources', 'nic', 'disk'];

export function changeKind<K extends ChangeKindName>(kind: K): ChangeModule<K> {
  return REGISTRY[kind];
}
