/** Reading a backing file from the host side, to check what a device wrote. */
import { closeSync, openSync, readSync } from 'node:fs';

/** `length` bytes of the file at `path` from `offset` (zeros past its end). */
export function fileBytes(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}
