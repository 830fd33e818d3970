/** A DeviceReport as `lspci -vvv` would print the device, plus what only vfio-user knows (regions, IRQ indexes, VERSION). */
import type { DeviceReport, RegionReport } from './collect.js';
import { className, progIfName, vendorName } from './pci-names.js';

const hex = (v: number, width: number): string => v.toString(16).padStart(width, '0');
const flag = (on: boolean): string => (on ? '+' : '-');

/** '16K', '4M', '256' (lspci's size form). */
function size(text: string): string {
  const n = BigInt(text);
  for (const [unit, shift] of [
    ['G', 30n],
    ['M', 20n],
    ['K', 10n],
  ] as const) {
    if (n >= 1n << shift && n % (1n << shift) === 0n) return `${n >> shift}${unit}`;
  }
  return n.toString();
}

function regionDetails(r: RegionReport): string {
  const parts = [r.flags.map((f) => f.toLowerCase()).join(',') || 'no access'];
  if (r.fd) parts.push('fd');
  if (r.sparseMmap) parts.push(`mmap areas: ${r.sparseMmap.map((a) => `${a.offset}+${a.size}`).join(', ') || 'none'}`);
  if (r.type) parts.push(`type ${r.type.type}/${r.type.subtype}`);
  if (r.msixMappable) parts.push('msix-mappable');
  return parts.join('; ');
}

export function formatReport(r: DeviceReport): string {
  const out: string[] = [];
  const line = (indent: number, text: string): number => out.push(`${'\t'.repeat(indent)}${text}`);
  line(0, `vfio-user device at ${r.socket}`);
  line(
    1,
    `Server: vfio-user ${r.server.major}.${r.server.minor}, capabilities ${r.server.json || '(none: spec defaults)'}`,
  );
  line(
    1,
    `Device: ${r.device.flags.join('|') || 'no flags'}, ${r.device.regions} regions, ${r.device.irqs} IRQ indexes`,
  );
  const p = r.pci;
  if (p) {
    const prog = progIfName(p.classCode);
    const vendor = vendorName(p.vendor);
    line(
      0,
      `${className(p.classCode)} [${hex(p.classCode >>> 8, 4)}]: ${vendor ?? 'Device'} [${hex(p.vendor, 4)}:${hex(p.device, 4)}]` +
        `${p.revision ? ` (rev ${hex(p.revision, 2)})` : ''}${p.classCode & 0xff ? ` (prog-if ${hex(p.classCode & 0xff, 2)}${prog ? ` [${prog}]` : ''})` : ''}`,
    );
    line(
      1,
      `Subsystem: ${vendorName(p.subsystemVendor) ?? 'Device'} [${hex(p.subsystemVendor, 4)}:${hex(p.subsystem, 4)}]`,
    );
    const c = p.command;
    line(
      1,
      `Control: I/O${flag((c & 1) !== 0)} Mem${flag((c & 2) !== 0)} BusMaster${flag((c & 4) !== 0)} SpecCycle${flag((c & 8) !== 0)} MemWINV${flag((c & 0x10) !== 0)} VGASnoop${flag((c & 0x20) !== 0)} ParErr${flag((c & 0x40) !== 0)} SERR${flag((c & 0x100) !== 0)} FastB2B${flag((c & 0x200) !== 0)} DisINTx${flag((c & 0x400) !== 0)}`,
    );
    const s = p.status;
    line(
      1,
      `Status: Cap${flag((s & 0x10) !== 0)} 66MHz${flag((s & 0x20) !== 0)} FastB2B${flag((s & 0x80) !== 0)} ParErr${flag((s & 0x100) !== 0)} >TAbort${flag((s & 0x1000) !== 0)} <TAbort${flag((s & 0x800) !== 0)} <MAbort${flag((s & 0x2000) !== 0)} >SERR${flag((s & 0x4000) !== 0)} <PERR${flag((s & 0x8000) !== 0)} INTx${flag((s & 0x8) !== 0)}`,
    );
    if (p.interruptPin !== 0)
      line(
        1,
        `Interrupt: pin ${String.fromCharCode(0x40 + Math.min(p.interruptPin, 26))} routed to IRQ ${p.interruptLine}`,
      );
    line(1, `Config space: ${p.configSize} bytes, header type ${hex(p.headerType, 2)}`);
    for (const b of r.bars) {
      const region = r.regions.find((x) => x.index === b.bar);
      const kind =
        b.kind === 'io'
          ? 'I/O ports'
          : `Memory (${b.kind === 'mem64' ? '64-bit' : '32-bit'}, ${b.prefetchable ? 'prefetchable' : 'non-prefetchable'})`;
      const address = BigInt(b.register) & (b.kind === 'io' ? ~0x3n : ~0xfn);
      const at = address === 0n ? '<unassigned>' : `0x${address.toString(16)}`;
      const probed = b.probedSize !== undefined ? ` [decodes ${size(b.probedSize)}]` : '';
      line(
        1,
        `Region ${b.bar}: ${kind} at ${at} [size=${size(b.regionSize)}]${probed}${region ? ` [${regionDetails(region)}]` : ''}`,
      );
    }
    for (const cap of r.capabilities) {
      const where = cap.extended ? `[${hex(cap.offset, 3)} v${cap.version ?? 0}]` : `[${hex(cap.offset, 2)}]`;
      const [first, ...rest] = cap.lines;
      line(
        1,
        `Capabilities: ${where} ${cap.name}${first ? `${cap.id === 0x10 || cap.id === 0x01 ? ' ' : ': '}${first}` : ''}`,
      );
      for (const l of rest) line(2, l);
    }
  }
  line(1, 'vfio-user regions:');
  for (const reg of r.regions) {
    line(
      2,
      reg.error !== undefined
        ? `${reg.index} ${reg.name}: ${reg.error}`
        : `${reg.index} ${reg.name}: ${reg.bytes === 0 ? 'absent' : `size ${reg.size} offset ${reg.offset} [${regionDetails(reg)}]`}`,
    );
  }
  line(1, 'vfio-user IRQ indexes:');
  for (const irq of r.irqs)
    line(
      2,
      irq.error !== undefined
        ? `${irq.index} ${irq.name}: ${irq.error}`
        : `${irq.index} ${irq.name}: ${irq.count} [${irq.flags.join('|') || 'no flags'}]`,
    );
  if (r.migration)
    line(
      1,
      `Migration: ${'error' in r.migration ? `not supported (${r.migration.error})` : r.migration.flags.join('|') || 'no flags'}`,
    );
  for (const problem of r.problems) line(1, `Problem: ${problem}`);
  return `${out.join('\n')}\n`;
}
