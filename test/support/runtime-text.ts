/**
 * An instance's runtime state as the node reads it: the runtime file with its
 * journal folded in (runtime-store.ts). Tests read runtime files only this
 * way; the raw file alone lags behind the journal.
 */
import * as path from 'node:path';
import { loadRuntimeFile, serializeRuntime, type RuntimeData } from '../../src/hypervisor/runtime-file';

/** `file` is <data dir>/<instance>/runtime.json. */
export function runtimeOf(file: string): RuntimeData {
  return loadRuntimeFile(file, path.basename(path.dirname(file)));
}

/** The state as canonical runtime file text (for before/after comparisons). */
export function runtimeTextOf(file: string): string {
  return serializeRuntime(runtimeOf(file));
}
