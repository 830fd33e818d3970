/**
 * The QEMU command-line pieces that connect to a served device.
 *
 * QEMU's `vfio-user-pci` takes its socket as a QAPI SocketAddress struct
 * property (`socket`, type unix only), so only the JSON form of -device works.
 * Checked against QEMU 11.1.3:
 *   -device vfio-user-pci,socket=/x.sock                         "Invalid parameter type for 'socket', expected: object"
 *   -device vfio-user-pci,socket.type=unix,socket.path=/x.sock   "Property 'vfio-user-pci.socket.type' not found"
 *   -device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"/x.sock"}}'   connects
 * (docs/system/devices/vfio-user.rst documents the JSON form too.)
 */
/** Quote one argument for a POSIX shell. */
function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_\-./=,:@%+]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** The `-device` value that makes QEMU connect to `socketPath` (absolute). */
export function qemuDeviceJson(socketPath: string): string {
  return JSON.stringify({ driver: 'vfio-user-pci', socket: { type: 'unix', path: socketPath } });
}

/** `-device '{"driver":"vfio-user-pci",...}'`, ready to paste into a shell. */
export function qemuDeviceOption(socketPath: string): string {
  return `-device ${shellQuote(qemuDeviceJson(socketPath))}`;
}

/** Guest RAM QEMU can share with the server (each DMA_MAP then carries an fd the server maps). */
const MEMORY_BACKEND_HINT = '-object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem';

/**
 * The `vfio-user-ts vm` line that boots a guest attached to these sockets. The
 * paths are absolute, so it works from any folder, in an installed package as
 * in this repository (where `npm run vm -- --socket ...` is the same).
 */
function vmHint(sockets: readonly string[]): string {
  return ['vfio-user-ts vm', ...sockets.map((s) => `--socket ${shellQuote(s)}`)].join(' ');
}

/** The text printed once all devices listen (or, with another heading, what --check found). */
export function connectHint(
  devices: readonly { name: string; socket: string; notes?: string[] }[],
  heading = 'vfio-user-ts is serving:',
): string {
  const width = Math.max(...devices.map((d) => d.name.length));
  const lines = ['', heading];
  for (const d of devices) {
    lines.push(`  ${d.name.padEnd(width)}  ${d.socket}`);
    for (const note of d.notes ?? []) lines.push(`  ${' '.repeat(width)}  ${note}`);
  }
  lines.push(
    '',
    'Connect QEMU (>= 10.1) with one -device per socket:',
    ...devices.map((d) => `  ${qemuDeviceOption(d.socket)}`),
    'and guest RAM that QEMU shares with us (its size must equal -m):',
    `  ${MEMORY_BACKEND_HINT}`,
    'Without share=on QEMU still works, but every DMA access becomes a socket message (slower).',
    'Or boot a throwaway Linux guest attached to them:',
    `  ${vmHint(devices.map((d) => d.socket))}`,
    '',
  );
  return lines.join('\n');
}
