/**
 * The identity of a caller as the audit trail records it (docs/audit.md):
 * "cli certificate AB:CD:..." (role and SHA-256 fingerprint), or the local
 * administrator on the master's unix socket.
 */
import { describeRole, LOCAL_ADMIN, type CertFacts } from './cert-roles';

export const LOCAL_ADMIN_IDENTITY = 'local administrator (master unix socket)';

export function identityOfFacts(facts: CertFacts): string {
  if (facts === LOCAL_ADMIN || facts.fingerprint === LOCAL_ADMIN.fingerprint) return LOCAL_ADMIN_IDENTITY;
  return `${describeRole(facts.role)} certificate ${facts.fingerprint}`;
}
