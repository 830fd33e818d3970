/**
 * Boot a throwaway Linux guest in QEMU (TCG) with vfio-user-pci devices attached.
 * The guest runs a busybox /init from a per-boot initramfs, loads the requested
 * modules, runs `script`, prints machine-readable lines on the serial console and
 * powers off. See docs/testing-with-qemu.md.
 *
 * Tests wrap their guest tests in `guestTest` (./guest-test.js), which skips loudly
 * (or fails under CI=true) when the kit is missing.
 */

export type { Guest, GuestOptions, GuestResult } from './guest-process.js';
export { startGuest, runGuest } from './guest-process.js';
