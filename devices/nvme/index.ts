/** The built-in NVMe device. */
export { NvmeController, type NvmeControllerOptions, type NamespaceOptions } from './controller.js';
export { Namespace } from './namespace.js';
