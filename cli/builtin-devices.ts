/**
 * Factories for the built-in device types (`"type": "nvme"` and `"type": "gpio"`):
 * they map a validated DeviceSpec onto the device's own constructor and tie its
 * side parts (the GPIO control socket, NVMe flush on close) to the daemon's
 * lifecycle. Under --check (`ctx.check`) they build the device without
 * touching the disk images: an image that exists must be readable and
 * writable, a missing one creatable; the controller is then built on memory.
 */
import { accessSync, constants, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { createGpioDevice, startGpioControl, type GpioControlServer } from '../devices/gpio/index.js';
import { NvmeController } from '../devices/nvme/index.js';
import type { DeviceSpec, GpioSpec, NvmeSpec } from './config.js';
import type { DeviceContext, DeviceFactory, HostedDevice } from '../server/device-module.js';

/** The factory for a built-in spec (the spec itself carries the validated options). */
export function builtinFactory(spec: Exclude<DeviceSpec, { type: 'module' }>): DeviceFactory {
  return spec.type === 'nvme' ? (ctx) => createNvme(spec, ctx) : (ctx) => createGpio(spec, ctx);
}

function createGpio(spec: GpioSpec, ctx: DeviceContext): HostedDevice {
  const { device, gpio } = createGpioDevice({
    name: spec.name,
    log: ctx.log,
    metrics: ctx.metrics,
    ...(spec.unsealedDmaFds && { unsealedDmaFds: spec.unsealedDmaFds }),
  });
  let control: GpioControlServer | undefined;
  return {
    endpoint: device,
    notes: spec.control ? [`control: vfio-user-ts gpio get|set|watch --control ${spec.control}`] : [],
    async start() {
      if (spec.control)
        control = await startGpioControl(gpio, spec.control, { log: ctx.log.child({ device: spec.name }) });
    },
    async close() {
      await control?.close();
      device.close(); // memfds, mappings, eventfds
    },
  };
}

/** --check: the image can be opened read-write, or created (its folder exists, or can be made). */
function checkImage(path: string): void {
  if (existsSync(path)) {
    accessSync(path, constants.R_OK | constants.W_OK);
    return;
  }
  let folder = dirname(path);
  while (!existsSync(folder) && dirname(folder) !== folder) folder = dirname(folder);
  try {
    accessSync(folder, constants.W_OK | constants.X_OK);
  } catch {
    throw new Error(`cannot create ${path}: ${folder} is not writable`);
  }
}

async function createNvme(spec: NvmeSpec, ctx: DeviceContext): Promise<HostedDevice> {
  let namespaces = spec.namespaces;
  if (ctx.check) {
    for (const ns of namespaces) if (ns.path) checkImage(ns.path);
    // Built on memory (one block each): nothing is created, resized or allocated.
    namespaces = namespaces.map((ns) => ({ size: ns.lbaSize, lbaSize: ns.lbaSize }));
  }
  const controller = new NvmeController({
    name: spec.name,
    namespaces,
    ...(spec.serial !== undefined && { serial: spec.serial }),
    ...(spec.model !== undefined && { model: spec.model }),
    ...(spec.firmware !== undefined && { firmware: spec.firmware }),
    ...(spec.queues !== undefined && { queues: spec.queues }),
    ...(spec.pollMicros !== undefined && { pollMicros: spec.pollMicros }),
    ...(spec.unsealedDmaFds && { unsealedDmaFds: spec.unsealedDmaFds }),
    log: ctx.log,
    metrics: ctx.metrics,
  });
  // close(): waits for in-flight commands, flushes (fdatasync) and closes the backing files.
  return { endpoint: controller.device, close: () => controller.close() };
}
