/**
 * Verify's view of an instance (gnt-cluster verify, gnt-instance verify),
 * one module per concept; this index re-exports them:
 *   - qemu-inventory.ts: what QEMU really has, from its own lists;
 *   - host-inventory.ts: what the host has (taps, their holders, bridges, disk files);
 *   - inventory-findings.ts: Finding and Repair, and how findings name things;
 *   - inventory-compare.ts: the runtime file against QEMU (pure);
 *   - host-compare.ts: the runtime file and QEMU against the host (pure);
 *   - inventory-repair.ts: the repairs that touch QEMU or the host (imported directly).
 */
export * from './qemu-inventory';
export * from './host-inventory';
export * from './inventory-findings';
export * from './inventory-compare';
export * from './host-compare';
