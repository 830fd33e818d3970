/** The built-in NVMe device. */
export { NvmeController, type NvmeControllerOptions, type NamespaceOptions } from './controller.js';
export type { DoorbellStats } from './core.js';
export { Namespace } from './namespace.js';
export { NVME_STATE_KIND, NVME_STATE_VERSION, type NvmeSavedState } from './state.js';
