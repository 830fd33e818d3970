/**
 * 'vfio-user-ts/guest-kit': boot a throwaway Linux guest under QEMU with your
 * vfio-user devices attached, from your own tests or scripts. The guest runs a
 * stock Debian kernel and busybox; your script's `RESULT key=value` lines come
 * back as `results`. The kit (QEMU 11.1, kernel, busybox) is fetched once from
 * Debian into ~/.cache/vfio-user-ts by `ensureKit()` (or the first boot).
 * See docs/testing-with-qemu.md.
 *
 *   import { runGuest } from 'vfio-user-ts/guest-kit';
 *   const r = await runGuest({ devices: [{ socketPath }], modules: ['nvme'], script: 'echo RESULT n=$(ls /dev/nvme*)' });
 */
export type { Guest, GuestOptions, GuestResult } from './guest-process.js';
export { GuestError, runGuest, startGuest } from './guest-process.js';
export type { Command, KitStamp } from './kit.js';
export { DEFAULT_MODULES, Kit, cacheDir, ensureKit, loadKit, provisioningBlocker } from './kit.js';
