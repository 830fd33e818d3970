/**
 * The DMA example device in a real Linux guest under QEMU's vfio-user-pci,
 * driven from the guest shell through uio_pci_generic: INTx delivery with
 * Status.INTERRUPT / COMMAND.INTX_DISABLE as Linux uses them (automask and
 * QEMU's UNMASK on the next BAR access), DMA writes into and reads from guest
 * RAM (shared memfd and message-based), and FLR through sysfs.
 * Needs the guest kit: skips loudly locally without it, fails with CI=true.
 */
import { describe, expect } from 'vitest';
import { createDmaDevice } from '../../../examples/dma-device.js';
import { findPciDevice } from '../../helpers/guest-script.js';
import { servedEachTest } from '../../helpers/served-each-test.js';
import { runGuest } from '../../../guest-kit/boot.js';
import { guestTest } from '../../guest/guest-test.js';

/** Registers as in examples/dma-device.ts; buffer at guest-physical 0 (reserved low memory Linux never uses). */
const SCRIPT = `
${findPciDevice(0x1234, 0xd3a0)}
echo "1234 d3a0" > /sys/bus/pci/drivers/uio_pci_generic/new_id
[ -e /dev/uio0 ] || { echo "RESULT uio=no"; exit 1; }
echo "RESULT uio=yes"
bar=$(head -n 1 $dev/resource | cut -d' ' -f1)
# Keep /dev/uio0 open for the whole run: uio_pci_generic clears bus mastering when it is closed.
exec 3<>/dev/uio0
# COMMAND = MEMORY | MASTER (INTx enabled)
printf '\\006\\000' | dd of=$dev/config bs=1 seek=4 count=2 conv=notrunc 2>/dev/null
echo "RESULT command=$(dd if=$dev/config bs=1 skip=4 count=2 2>/dev/null | hexdump -v -e '1/2 "%04x"')"
ring() {
  devmem $(( bar + 0x10 )) 32 $1
  echo "RESULT irq$2=$(timeout 10 dd bs=4 count=1 <&3 2>/dev/null | hexdump -v -e '1/4 "%u"')"
  echo "RESULT status$2=$(devmem $(( bar + 0x14 )) 32)"
  echo "RESULT masked$2=$(dd if=$dev/config bs=1 skip=4 count=2 2>/dev/null | hexdump -v -e '1/2 "%04x"')"
  # Re-enable INTx: the uio_pci_generic handler masked it with COMMAND.INTX_DISABLE
  # (this kernel's uio_pci_generic has no irqcontrol, so clear the bit through sysfs).
  printf '\\006\\000' | dd of=$dev/config bs=1 seek=4 count=2 conv=notrunc 2>/dev/null
}
devmem $(( bar + 0x00 )) 32 0
devmem $(( bar + 0x04 )) 32 0
devmem $(( bar + 0x08 )) 32 64
devmem $(( bar + 0x0c )) 32 0x40
ring 1 1
echo "RESULT mem0=$(devmem 0x0 32)"
echo "RESULT mem60=$(devmem 0x3c 32)"
ring 2 2
echo "RESULT sum=$(devmem $(( bar + 0x18 )) 32)"
echo "RESULT reset_method=$(cat $dev/reset_method 2>/dev/null | tr ' ' ,)"
echo 1 > $dev/reset && echo "RESULT reset=ok"
echo "RESULT sum_after_reset=$(devmem $(( bar + 0x18 )) 32)"
`;

describe('the DMA example device in a Linux guest (uio_pci_generic)', () => {
  const host = servedEachTest('vfio-user-ts-uio-');

  for (const sharedMemory of [true, false]) {
    guestTest(
      `INTx, DMA and FLR work with ${sharedMemory ? 'shared (memfd) guest RAM' : 'message-based DMA'}`,
      async () => {
        const socketPath = await host.serve(createDmaDevice(host.log));
        const result = await runGuest({
          devices: [{ socketPath }],
          script: SCRIPT,
          modules: ['uio_pci_generic'],
          sharedMemory,
          timeoutMs: 150_000,
        });
        const sum = Array.from({ length: 64 }, (_, i) => 0x40 + i).reduce((a, b) => a + b, 0);
        expect(result.results, result.serial.slice(-3000)).toMatchObject({
          found: 'yes',
          uio: 'yes',
          command: '0006',
          irq1: '1',
          status1: '0x00000001',
          masked1: '0406',
          mem0: '0x43424140',
          mem60: '0x7F7E7D7C',
          irq2: '2',
          status2: '0x00000001',
          sum: `0x${sum.toString(16).toUpperCase().padStart(8, '0')}`,
          reset: 'ok',
          sum_after_reset: '0x00000000',
        });
        expect(result.results.reset_method).toContain('flr');
      },
      200_000,
    );
  }
});
