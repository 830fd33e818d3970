/**
 * Typed front of the native addon (native/src, built by node-gyp on `npm install`).
 * The one way to reach it: `import { native } from '.../native/index.js'`.
 *
 * Everything here is Linux-only and works on raw file descriptors (numbers).
 * The contract (and the fd ownership rule) is in native/types.ts.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStagedChannel } from './staged-channel.js';
import type { AddonBinding, NativeBinding } from './types.js';

export type { NativeBinding, NativeChannel, NativeMapping, Watcher } from './types.js';

function findPackageRoot(start: string): string {
  let dir = start;
  for (;;) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`vfio-user-ts: cannot find the package root above ${start}`);
    dir = up;
  }
}

/**
 * Loads build/Release/vfio_user_native.node, or the file named by
 * VFIO_USER_NATIVE_ADDON (e.g. a sanitizer build for debugging).
 */
function load(): AddonBinding {
  const override = process.env.VFIO_USER_NATIVE_ADDON;
  const file = override
    ? override
    : join(findPackageRoot(dirname(fileURLToPath(import.meta.url))), 'build', 'Release', 'vfio_user_native.node');
  if (!existsSync(file)) {
    throw new Error(`vfio-user-ts: native addon missing (${file}); run \`npm install\` (it builds it with node-gyp)`);
  }
  return createRequire(import.meta.url)(file) as AddonBinding;
}

/** preadvNowait: the data is not in the page cache (EAGAIN). */
export const NOWAIT_WOULD_BLOCK = -1;
/** preadvNowait: this fd (file system, kernel) does not support RWF_NOWAIT reads. */
export const NOWAIT_UNSUPPORTED = -2;

/** fallocate mode: free the range's blocks (reads return zeros), file size unchanged. */
export const FALLOC_PUNCH_HOLE = 0x02 | 0x01;
/** fallocate mode: make the range read as zeros (blocks stay allocated, or become unwritten extents), size unchanged. */
export const FALLOC_ZERO_RANGE = 0x10 | 0x01;

const addon = load();

/** The addon; its channels pass small messages through per-channel staging buffers (native/staged-channel.ts). */
export const native: NativeBinding = {
  ...addon,
  openChannel: (fd, options, onMessage, onClose) => openStagedChannel(addon, fd, options, onMessage, onClose),
};
