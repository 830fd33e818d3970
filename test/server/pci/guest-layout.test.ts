/**
 * A device with every kind of region in a real Linux guest: an I/O BAR, a
 * 64-bit prefetchable BAR that is half shared memory (SPARSE_MMAP, mapped by
 * QEMU into the guest) and half registers, an MSI-X BAR whose free pages are
 * memory, an expansion ROM, PCI Express with a Device Serial Number. QEMU must
 * accept the layout (no mmap failure), Linux must size every BAR, and bytes
 * must flow both ways through the shared memory.
 * Needs the guest kit: skips loudly locally without it, fails with CI=true.
 */
import { describe, expect } from 'vitest';
import { PciDevice } from '../../../server/index.js';
import { findPciDevice } from '../../helpers/guest-script.js';
import { servedEachTest } from '../../helpers/served-each-test.js';
import { runGuest } from '../../../guest-kit/boot.js';
import { guestTest } from '../../guest/guest-test.js';

const VENDOR = 0x1234;
const DEVICE = 0xd3a1;

/** A minimal valid option ROM image (4 KiB): 55 AA header, PCIR structure, last-image flag. */
function optionRom(): Uint8Array {
  const rom = new Uint8Array(4096);
  const v = new DataView(rom.buffer);
  rom[0] = 0x55;
  rom[1] = 0xaa;
  rom[2] = 8; // 8 x 512 bytes
  v.setUint16(0x18, 0x1c, true);
  rom.set([0x50, 0x43, 0x49, 0x52], 0x1c); // "PCIR"
  v.setUint16(0x1c + 4, VENDOR, true);
  v.setUint16(0x1c + 6, DEVICE, true);
  v.setUint16(0x1c + 10, 0x18, true); // structure length
  rom[0x1c + 13] = 0x00;
  rom[0x1c + 14] = 0x00;
  rom[0x1c + 15] = 0xff; // class code
  v.setUint16(0x1c + 16, 8, true); // image length in 512-byte units
  rom[0x1c + 21] = 0x80; // last image
  rom.set([0x76, 0x66, 0x69, 0x6f], 0x40); // "vfio"
  return rom;
}

const SCRIPT = `
${findPciDevice(VENDOR, DEVICE)}
line() { sed -n "$(( $1 + 1 ))p" $dev/resource; }
size() { set -- $(line $1); echo $(( $2 - $1 + 1 )); }
flags() { set -- $(line $1); echo $3; }
for i in 0 1 2 3 4 5; do echo "RESULT bar\${i}size=$(size $i)"; done
echo "RESULT bar2flags=$(flags 2)"
echo "RESULT bar0flags=$(flags 0)"
echo 1 > $dev/enable
bar2=$(line 2 | cut -d' ' -f1)
bar4=$(line 4 | cut -d' ' -f1)
echo "RESULT shared_in=$(devmem $(( bar2 + 0x100 )) 32)"
devmem $(( bar2 + 0x200 )) 32 0x11223344
echo "RESULT shared_back=$(devmem $(( bar2 + 0x200 )) 32)"
echo "RESULT reg=$(devmem $(( bar2 + 0x8004 )) 32)"
devmem $(( bar4 + 0x10 )) 32 0xa5a5a5a5
echo "RESULT bar4_mem=$(devmem $(( bar4 + 0x10 )) 32)"
echo "RESULT ext0=$(dd if=$dev/config bs=4 skip=64 count=1 2>/dev/null | hexdump -v -e '1/4 "%08x"')"
echo "RESULT serial=$(dd if=$dev/config bs=4 skip=65 count=2 2>/dev/null | hexdump -v -e '1/4 "%08x" ":"')"
echo 1 > $dev/rom
echo "RESULT rom=$(dd if=$dev/rom bs=1 count=4 2>/dev/null | hexdump -v -e '4/1 "%02x"')"
echo "RESULT romtag=$(dd if=$dev/rom bs=1 skip=64 count=4 2>/dev/null)"
echo 0 > $dev/rom
echo "DONE-LAYOUT"
`;

describe('region layouts QEMU and Linux accept', () => {
  const host = servedEachTest('vfio-user-ts-layout-');

  guestTest('I/O, 64-bit prefetchable sparse-mmap, MSI-X + memory BARs, ROM and DSN', async () => {
    const ioWrites: string[] = [];
    const device = new PciDevice({
      name: 'layout',
      id: { vendor: VENDOR, device: DEVICE, classCode: 0xff0000 },
      bars: [
        {
          index: 0,
          size: 32,
          type: 'io',
          read: (o) => 0x10 + o,
          write: (o, s, v) => void ioWrites.push(`${o}/${s}=${v}`),
        },
        {
          index: 2,
          size: 0x10000,
          type: 'mem64',
          prefetchable: true,
          memory: [{ offset: 0, size: 0x8000 }],
          read: (o) => (0xfeed0000 | o) >>> 0,
        },
        { index: 4, size: 0x4000, memory: true },
      ],
      interrupts: { intx: true, msix: { vectors: 4, bar: 4 } },
      express: true,
      capabilities: [{ kind: 'pm' }, { kind: 'dsn', serial: 0x0123456789abcdefn }],
      rom: optionRom(),
      log: host.log,
    });
    new DataView(device.barMemory(2).buffer).setUint32(0x100, 0xcafef00d, true);
    // Record trapped BAR writes: the memory areas must be reached through QEMU's mmap, not by message.
    const trapped: string[] = [];
    const regionWrite = device.regionWrite.bind(device);
    device.regionWrite = (index, offset, data) => {
      if (index === 2 || index === 4) trapped.push(`${index}@0x${offset.toString(16)}`);
      return regionWrite(index, offset, data);
    };
    const socketPath = await host.serve(device);
    const result = await runGuest({ devices: [{ socketPath }], script: SCRIPT });
    const r = result.results;
    expect(r, result.serial.slice(-4000)).toMatchObject({
      found: 'yes',
      bar0size: '32',
      bar1size: '1', // empty resource line: 0x0 0x0 -> 0 - 0 + 1
      bar2size: String(0x10000),
      bar3size: '1',
      bar4size: String(0x4000),
      bar5size: '1',
      shared_in: '0xCAFEF00D',
      shared_back: '0x11223344',
      reg: '0xFEED8004',
      bar4_mem: '0xA5A5A5A5',
      serial: '89abcdef:01234567:',
      rom: '55aa0800',
      romtag: 'vfio',
    });
    // 64-bit (bit 20, IORESOURCE_MEM_64) and prefetchable (bit 13) memory resource; I/O resource (bit 8).
    expect(BigInt(r.bar2flags!) & 0x102200n).toBe(0x102200n);
    expect(BigInt(r.bar0flags!) & 0x100n).toBe(0x100n);
    expect(Number.parseInt(r.ext0!, 16) & 0xffff).toBe(0x0003);
    // The guest's write landed in the shared memfd without a message.
    expect(new DataView(device.barMemory(2).buffer).getUint32(0x200, true)).toBe(0x11223344);
    expect(new DataView(device.barMemory(4).buffer).getUint32(0x10, true)).toBe(0xa5a5a5a5);
    expect(result.serial).not.toMatch(/Failed to mmap/i);
    expect(trapped).not.toContain('2@0x200');
    expect(trapped).not.toContain('4@0x10');
  });
});
