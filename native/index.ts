/**
 * Typed front of the native addon (native/src). The one way to reach it:
 * `import { native } from '.../native/index.js'`.
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

const require = createRequire(import.meta.url);

/** node-gyp-build's loader (it ships no types): `resolve` names the file `load` requires. */
interface NodeGypBuild {
  (dir: string): unknown;
  resolve(dir: string): string;
}

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
 * Loads the addon the way node-gyp-build does: a build from source
 * (build/Release, what `npm install` makes in this repository, or the fallback
 * when no prebuild fits) wins over the package's prebuilt one
 * (prebuilds/linux-x64/, N-API: one file for every Node version). The file
 * named by VFIO_USER_NATIVE_ADDON wins over both (e.g. a sanitizer build).
 */
function load(): AddonBinding {
  const override = process.env.VFIO_USER_NATIVE_ADDON;
  if (override) {
    if (!existsSync(override))
      throw new Error(`vfio-user-ts: VFIO_USER_NATIVE_ADDON names a missing file (${override})`);
    return require(override) as AddonBinding;
  }
  const root = findPackageRoot(dirname(fileURLToPath(import.meta.url)));
  const nodeGypBuild = require('node-gyp-build') as NodeGypBuild;
  let file: string;
  try {
    file = nodeGypBuild.resolve(root);
  } catch (err) {
    const detail = err instanceof Error ? err.message.trim() : String(err);
    throw new Error(
      `vfio-user-ts: no native addon for this machine (${detail}); build it from source with ` +
        '`npm rebuild vfio-user-ts` (needs a C++ compiler, make and python3)',
      { cause: err },
    );
  }
  return require(file) as AddonBinding;
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
