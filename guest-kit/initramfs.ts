/**
 * Builds a guest's initramfs: busybox, the requested kernel modules (dependencies
 * first), the test script and a busybox-sh /init that mounts proc/sys/dev, loads
 * the modules, runs the script and powers off. Serial lines it prints:
 *   GUEST-BOOTED <uptime>          /init started
 *   GUEST-MODULE-FAILED <name>     an insmod failed
 *   GUEST-READY                    modules loaded, script starts
 *   RESULT exit=<rc>               the script's exit status
 *   GUEST-EXIT <rc>                about to power off
 */
import { writeCpio, type CpioEntry } from './cpio.js';
import type { Kit } from './kit.js';
import { readFileSync } from 'node:fs';

export interface InitramfsOptions {
  script: string;
  /** Kernel modules to load (none when undefined). */
  modules?: string[] | undefined;
  /** Extra files by guest path (none when undefined). */
  files?: Record<string, string | Uint8Array> | undefined;
  /** Skip powering off after the script (interactive shells exit via poweroff themselves). */
  keepRunning?: boolean;
}

/** The guest's /init (busybox sh). */
function initScript(keepRunning = false): string {
  return `#!/bin/sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
[ -d /sys/kernel/config ] && mount -t configfs configfs /sys/kernel/config 2>/dev/null
echo "GUEST-BOOTED $(cut -d' ' -f1 /proc/uptime)"
while read -r m; do
  [ -n "$m" ] && { insmod "/lib/modules/$m.ko" || echo "GUEST-MODULE-FAILED $m"; }
done < /etc/modules.order
echo GUEST-READY
cd /root
/bin/sh /test.sh
rc=$?
echo "RESULT exit=$rc"
echo "GUEST-EXIT $rc"
${keepRunning ? '' : 'sync\npoweroff -f\n'}`;
}

/** The initramfs (newc cpio, uncompressed) for one boot. */
export function buildInitramfs(kit: Kit, options: InitramfsOptions): Buffer {
  const entries: CpioEntry[] = [];
  const dirs = new Set<string>();
  const dir = (path: string): void => {
    const parts = path.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      if (!dirs.has(p)) {
        dirs.add(p);
        entries.push({ type: 'dir', path: p });
      }
    }
  };
  for (const d of [
    'bin',
    'sbin',
    'usr/bin',
    'usr/sbin',
    'dev',
    'proc',
    'sys',
    'tmp',
    'run',
    'root',
    'etc',
    'lib/modules',
    'mnt',
  ])
    dir(d);
  entries.push({ type: 'char', path: 'dev/console', major: 5, minor: 1 });
  entries.push({ type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 });
  entries.push({ type: 'file', path: 'bin/busybox', data: readFileSync(kit.busybox), mode: 0o755 });
  entries.push({ type: 'symlink', path: 'bin/sh', target: 'busybox' });
  const order = kit.modules.loadOrder(options.modules ?? []);
  for (const m of order) entries.push({ type: 'file', path: `lib/modules/${m.name}.ko`, data: readFileSync(m.path) });
  entries.push({ type: 'file', path: 'etc/modules.order', data: order.map((m) => m.name).join('\n') + '\n' });
  entries.push({ type: 'file', path: 'etc/passwd', data: 'root:x:0:0:root:/root:/bin/sh\n' });
  for (const [path, data] of Object.entries(options.files ?? {})) {
    const clean = path.replace(/^\/+/, '');
    const parent = clean.split('/').slice(0, -1).join('/');
    if (parent) dir(parent);
    entries.push({ type: 'file', path: clean, data, mode: 0o755 });
  }
  entries.push({ type: 'file', path: 'test.sh', data: options.script, mode: 0o755 });
  entries.push({ type: 'file', path: 'init', data: initScript(options.keepRunning), mode: 0o755 });
  return writeCpio(entries);
}
