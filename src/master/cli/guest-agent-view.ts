/** The "Guest agent" part of `gnt-instance info`: the guest's own view through qemu-ga, or why there is none. */
import type { GuestAgentView__Output } from '../../generated/gnt/master/v1/GuestAgentView';

export function formatGuestAgent(g: GuestAgentView__Output | null | undefined): string {
  if (!g) return '';
  if (!g.answers) return `Guest agent: not answering (${g.error || 'no reason given'})\n`;
  const lines = [`Guest agent: qemu-ga ${g.agentVersion}`, `  OS: ${g.os}${g.kernelRelease && !g.os.includes(g.kernelRelease) ? ` (kernel ${g.kernelRelease})` : ''}`];
  lines.push(`  vCPUs online: ${g.vcpusOnline} of ${g.vcpusListed}`);
  const blockMiB = Number(g.memoryBlockBytes) / (1 << 20);
  lines.push(`  Memory blocks online: ${g.memoryBlocksOnline} of ${g.memoryBlocksListed}${blockMiB ? ` (${blockMiB} MiB each)` : ''}`);
  lines.push('  Interfaces:');
  for (const i of g.interfaces) lines.push(`    ${i.name} ${i.mac || '-'} ${i.addresses.join(' ') || '(no address)'}`);
  lines.push('  Disks:');
  if (!g.disks.length) lines.push('    none');
  for (const d of g.disks) lines.push(`    ${d.name} ${d.busType || '-'} ${d.pci ? `PCI ${d.pci}` : ''}${d.scsi ? ` SCSI ${d.scsi}` : ''}`.trimEnd());
  return lines.join('\n') + '\n';
}
