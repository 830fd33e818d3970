/**
 * The ACCES PCI-IDIO-16 as Linux's gpio-pci-idio-16 (and its gpio-idio-16
 * library) sees it: PCI ids, the BAR it maps and the 8-bit registers in it.
 *
 * Register map (BAR2, byte registers; reads and writes mean different things):
 *
 * | offset | read                               | write                         |
 * |--------|------------------------------------|-------------------------------|
 * | 0x0    | outputs 0-7 (what was written)     | outputs 0-7                   |
 * | 0x1    | inputs 0-7                         | clear the pending interrupt   |
 * | 0x2    | enable the IRQ (reads 0)           | disable the IRQ               |
 * | 0x3    | activate input filters (reads 0)   | deactivate input filters      |
 * | 0x4    | outputs 8-15                       | outputs 8-15                  |
 * | 0x5    | inputs 8-15                        | ignored                       |
 * | 0x6    | interrupt status (IrqStatus bits)  | ignored                       |
 * | other  | 0                                  | ignored                       |
 */

/** PCI vendor id of ACCES I/O Products ("IO" in ASCII). */
export const IDIO16_VENDOR_ID = 0x494f;
/** PCI device id of the PCI-IDIO-16. */
export const IDIO16_DEVICE_ID = 0x0dc8;
/** The BAR the Linux driver maps (pcim_iomap_regions(pdev, BIT(2))). */
export const IDIO16_BAR_INDEX = 2;
/** Size of BAR2 in I/O space (the default, as on the real card): the 8 byte registers. */
export const IDIO16_IO_BAR_SIZE = 8;
/** Size of BAR2 in memory space (barType 'mem32'). The registers use the first 8 bytes; the rest reads 0. */
export const IDIO16_BAR_SIZE = 0x100;
/** Output lines and input lines each. */
export const IDIO16_LINES = 16;

/** Byte offsets in BAR2. */
export const Idio16Reg = {
  OUT0_7: 0x0,
  IN0_7: 0x1,
  /** Read: enable IRQ; write: disable IRQ. */
  IRQ_CTL: 0x2,
  /** Read: activate input filters; write: deactivate them. */
  FILTER_CTL: 0x3,
  OUT8_15: 0x4,
  IN8_15: 0x5,
  IRQ_STATUS: 0x6,
} as const;

/**
 * Bits of the interrupt status register (0x6) while a change-of-state
 * interrupt is pending; 0 otherwise. Linux 6.1's handler wants
 * `(status & 0x3) && (status & 0x4)`; the regmap-irq version (6.4+) tests
 * bit 2 for every input line. Both are satisfied: PENDING plus the group(s)
 * of inputs that changed since the interrupt was last cleared.
 */
export const IrqStatus = {
  /** Some input among 0-7 changed. */
  GROUP0_7: 0x1,
  /** Some input among 8-15 changed. */
  GROUP8_15: 0x2,
  /** A change-of-state interrupt is pending. */
  PENDING: 0x4,
} as const;
