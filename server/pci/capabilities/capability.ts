/**
 * What a capability builder hands the chain: its id and length, and how to
 * write its registers (values, writable and RW1C masks, write hooks) at the
 * offset the chain chose. The chain writes the id and next pointer itself.
 */
import type { ConfigSpace } from '../config-space.js';

/** A standard capability (in the first 256 bytes, linked from 0x34). */
export interface Capability {
  /** PCI capability id (PCI_CAP_ID_*). */
  readonly id: number;
  /** Bytes, including the 2-byte id/next header. */
  readonly length: number;
  /** Fill in registers after the 2-byte header at `at`. */
  install(cs: ConfigSpace, at: number): void;
}

/** An extended capability (PCI Express config space, linked from 0x100). */
export interface ExtendedCapability {
  /** PCI_EXT_CAP_ID_*. */
  readonly id: number;
  readonly version: number;
  /** Bytes, including the 4-byte header. */
  readonly length: number;
  /** Fill in registers after the 4-byte header at `at`. */
  install(cs: ConfigSpace, at: number): void;
}

/** PCI capability ids used here. */
export const CapId = { PM: 0x01, MSI: 0x05, VENDOR: 0x09, EXPRESS: 0x10, MSIX: 0x11 } as const;
/** PCI extended capability ids used here. */
export const ExtCapId = { DSN: 0x0003, VENDOR: 0x000b } as const;
