/**
 * The package's entry points ('vfio-user-ts', 'vfio-user-ts/client', ...):
 * the package.json "exports" map (what dist resolves at run time), the
 * tsconfig.json "paths" (tsc, tsx) and the vitest aliases all name the same
 * source files, and importing an entry point by name reaches the same module
 * instances as the relative imports (one copy of the server code).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import * as main from 'vfio-user-ts';
import * as clientEntry from 'vfio-user-ts/client';
import * as nvmeEntry from 'vfio-user-ts/nvme';
import * as gpioEntry from 'vfio-user-ts/gpio';
import * as guestKitEntry from 'vfio-user-ts/guest-kit';
import * as traceEntry from 'vfio-user-ts/trace';
import { PciDevice } from '../../server/pci/device.js';
import { DmaSpace } from '../../server/dma/dma-space.js';
import { VfioUserError } from '../../protocol/errors.js';
import { VfioUserClient } from '../../client/index.js';
import { NvmeController } from '../../devices/nvme/controller.js';
import { createGpioDevice } from '../../devices/gpio/device.js';
import { runGuest } from '../../guest-kit/boot.js';
import { ensureKit } from '../../guest-kit/kit.js';
import { readCapture } from '../../trace/capture.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  exports: Record<string, string | { types: string; default: string }>;
};

/** "exports" entries that point into dist: specifier -> the source file (relative to the root) it is built from. */
function entrySources(): Map<string, string> {
  const out = new Map<string, string>();
  for (const [subpath, target] of Object.entries(pkg.exports)) {
    if (typeof target === 'string') continue; // ./package.json
    const m = /^\.\/dist\/(.+)\.js$/.exec(target.default);
    expect(m, `${subpath}: default target ${target.default} is not under ./dist`).not.toBeNull();
    expect(target.types, `${subpath}: types next to the code`).toBe(`./dist/${m![1]}.d.ts`);
    out.set(pkg.name + subpath.slice(1), `./${m![1]}.ts`);
  }
  return out;
}

describe('package entry points', () => {
  it('export the library, the client, both built-in devices, the guest kit and the trace, each built from a source file that exists', () => {
    const sources = entrySources();
    expect([...sources.keys()].sort()).toEqual([
      'vfio-user-ts',
      'vfio-user-ts/client',
      'vfio-user-ts/gpio',
      'vfio-user-ts/guest-kit',
      'vfio-user-ts/nvme',
      'vfio-user-ts/trace',
    ]);
    for (const file of sources.values()) expect(existsSync(join(ROOT, file)), file).toBe(true);
    expect(pkg.exports['./package.json']).toBe('./package.json');
  });

  it('resolve the same way in tsconfig.json "paths" as in the exports map', () => {
    const read = ts.readConfigFile(join(ROOT, 'tsconfig.json'), (p) => ts.sys.readFile(p));
    expect(read.error).toBeUndefined();
    const paths = (read.config as { compilerOptions: { paths: Record<string, string[]> } }).compilerOptions.paths;
    expect(paths).toEqual(Object.fromEntries([...entrySources()].map(([specifier, file]) => [specifier, [file]])));
  });

  it('reach the same module instances as relative imports (one copy of the server code)', () => {
    expect(main.PciDevice).toBe(PciDevice);
    expect(main.DmaSpace).toBe(DmaSpace);
    expect(main.VfioUserError).toBe(VfioUserError);
    expect(clientEntry.VfioUserClient).toBe(VfioUserClient);
    expect(nvmeEntry.NvmeController).toBe(NvmeController);
    expect(gpioEntry.createGpioDevice).toBe(createGpioDevice);
    expect(guestKitEntry.runGuest).toBe(runGuest);
    expect(guestKitEntry.ensureKit).toBe(ensureKit);
    expect(traceEntry.readCapture).toBe(readCapture);
    // The built-in devices are PciDevices of this very copy.
    const { device } = gpioEntry.createGpioDevice();
    expect(device).toBeInstanceOf(PciDevice);
    device.close();
  });
});
