/**
 * What `vfio-user-ts serve` (and `npm start`) runs with no --config and no
 * --device: one NVMe controller on a sparse 1 GiB image under ./data/ and one
 * GPIO card, with their sockets under ./run/ (relative to the working folder).
 */
export const DEFAULT_CONFIG_SOURCE = 'built-in default';

export const DEFAULT_CONFIG = {
  devices: [
    { type: 'nvme', name: 'nvme0', socket: 'run/nvme0.sock', options: { disk: 'data/nvme0.img', size: '1G' } },
    { type: 'gpio', name: 'gpio0', socket: 'run/gpio0.sock' },
  ],
} as const;
