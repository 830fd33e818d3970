/**
 * `vfio-user-ts vm` (in this repository also `npm run vm`): boots a throwaway
 * Linux guest with an interactive busybox shell on this terminal, attached to
 * a running daemon's device sockets, so a device author can poke a device with
 * real Linux tools. See docs/testing-with-qemu.md.
 *
 *   vfio-user-ts vm                   every *.sock under ./run/
 *   vfio-user-ts vm --socket run/nvme0.sock --socket /tmp/x.sock
 *   vfio-user-ts vm --no-share --smp 2 --memory 1024 --module nvme-tcp -- -device ...
 *
 * Quit with `poweroff` in the guest, or Ctrl-A x.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { GuestOptions } from './boot.js';
import { prepareInitrd, qemuArguments } from './guest-process.js';
import { DEFAULT_MODULES, ensureKit } from './kit.js';
import { createLogger } from '../server/log.js';

/** `vfio-user-ts vm --help`. */
export const VM_HELP = `Usage: vfio-user-ts vm [--socket PATH]... [--no-share] [--smp N] [--memory MiB] [--module NAME]... [-- QEMU ARGS]
  --socket PATH   attach the vfio-user device listening on PATH (repeatable; default: every *.sock under ./run/)
  --no-share      plain guest RAM (no memfd): the device's DMA goes through DMA_READ/DMA_WRITE messages
  --smp N         vCPUs (default 1)
  --memory MiB    guest RAM (default 512)
  --module NAME   load another kernel module (nvme and gpio-pci-idio-16 are always loaded)
In the guest: pci or lspci (PCI devices from sysfs; -v adds BARs), devmem, dd, hexdump, /sys/class/gpio, /dev/nvme0n1; poweroff or Ctrl-A x quits.
(In the vfio-user-ts repository: npm run vm -- [options].)
`;

/** `lspci`-like listing from sysfs (busybox has no lspci). */
const PCI_LIST = `#!/bin/sh
for d in /sys/bus/pci/devices/*; do
  drv=-; [ -e $d/driver ] && drv=$(basename $(readlink $d/driver))
  printf '%s %s:%s class %s rev %s driver %s\\n' "\${d##*/}" "$(cut -c3- $d/vendor)" "$(cut -c3- $d/device)" "$(cut -c3- $d/class)" "$(cut -c3- $d/revision)" "$drv"
  [ "$1" = -v ] && awk '$1 != "0x0000000000000000" { printf "    resource%d %s-%s flags %s\\n", NR-1, $1, $2, $3 }' $d/resource 2>/dev/null
done
`;

function shellScript(rows?: number, cols?: number): string {
  return `${rows && cols ? `stty rows ${rows} cols ${cols}\n` : ''}echo
echo '  vfio-user-ts test VM: a throwaway Linux guest with your devices attached.'
echo '  Try: pci -v, devmem ADDR 32, ls /sys/class/gpio, ls /dev/nvme*, dmesg; poweroff (or Ctrl-A x) quits.'
echo
pci
setsid cttyhack sh -l
`;
}

interface CliOptions {
  sockets: string[];
  share: boolean;
  smp: number;
  memory: number;
  modules: string[];
  qemuArgs: string[];
}

/** The options, or 'help' for -h/--help; throws an Error that says what is wrong. */
function parseArgs(argv: string[]): CliOptions | 'help' {
  const o: CliOptions = { sockets: [], share: true, smp: 1, memory: 512, modules: [], qemuArgs: [] };
  const value = (i: number, flag: string): string => {
    const v = argv[i];
    if (v === undefined) throw new Error(`${flag} needs a value`);
    return v;
  };
  const int = (s: string, flag: string, min: number, max: number): number => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${flag} must be an integer ${min}..${max}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--socket':
        o.sockets.push(resolve(value(++i, a)));
        break;
      case '--no-share':
        o.share = false;
        break;
      case '--smp':
        o.smp = int(value(++i, a), a, 1, 64);
        break;
      case '--memory':
        o.memory = int(value(++i, a), a, 64, 65536);
        break;
      case '--module':
        o.modules.push(value(++i, a));
        break;
      case '--':
        o.qemuArgs = argv.slice(i + 1);
        i = argv.length;
        break;
      case '-h':
      case '--help':
        return 'help';
      default:
        throw new Error(`unknown argument ${a}\n\n${VM_HELP}`);
    }
  }
  return o;
}

/** Every UNIX socket named *.sock under `dir` (recursively). */
function findSockets(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const ent of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) out.push(...findSockets(p));
    else if (ent.name.endsWith('.sock') && statSync(p).isSocket()) out.push(p);
  }
  return out.sort();
}

/** `vfio-user-ts vm ARGS`: boots the guest and resolves with QEMU's exit code (2: bad arguments or setup). */
export async function vmCommand(argv: string[]): Promise<number> {
  let cli: CliOptions | 'help';
  try {
    cli = parseArgs(argv);
  } catch (err) {
    console.error(`vfio-user-ts vm: ${(err as Error).message}`);
    return 2;
  }
  if (cli === 'help') {
    process.stdout.write(VM_HELP);
    return 0;
  }
  try {
    return await bootInteractive(cli);
  } catch (err) {
    console.error(`vfio-user-ts vm: ${(err as Error).message}`);
    return 2;
  }
}

async function bootInteractive(cli: CliOptions): Promise<number> {
  const sockets = cli.sockets.length ? cli.sockets : findSockets(resolve('run'));
  for (const s of sockets)
    if (!existsSync(s) || !statSync(s).isSocket()) throw new Error(`not a socket: ${s} (is the daemon running?)`);
  if (!sockets.length)
    console.error('vm: no device sockets (none given, none under ./run/): booting without vfio-user devices');
  const kit = await ensureKit(createLogger({ pretty: false }).child({ component: 'guest-kit' }));
  const options: GuestOptions = {
    devices: sockets.map((socketPath) => ({ socketPath })),
    script: shellScript(process.stdout.rows, process.stdout.columns),
    modules: [...DEFAULT_MODULES, ...cli.modules],
    sharedMemory: cli.share,
    smp: cli.smp,
    memoryMiB: cli.memory,
    qemuArgs: cli.qemuArgs,
    files: { 'usr/bin/pci': PCI_LIST, 'usr/bin/lspci': PCI_LIST },
  };
  const { dir, initrd } = prepareInitrd(kit, options);
  const cmd = kit.qemu();
  console.error(
    `vm: QEMU ${kit.stamp.qemuVersion}, Linux ${kit.stamp.kernelRelease}, devices: ${sockets.join(' ') || 'none'}; Ctrl-A x quits`,
  );
  const child = spawn(cmd.file, [...cmd.args, ...qemuArguments(kit, options, initrd, true)], {
    env: { ...process.env, ...cmd.env },
    stdio: 'inherit',
  });
  // Ctrl-C belongs to the guest (QEMU owns the raw terminal); never kill QEMU from here.
  process.on('SIGINT', () => undefined);
  return new Promise((resolveExit) => {
    child.on('error', (err) => {
      console.error(`vm: ${err.message}`);
      rmSync(dir, { recursive: true, force: true });
      resolveExit(1);
    });
    child.on('close', (code) => {
      rmSync(dir, { recursive: true, force: true });
      resolveExit(code ?? 1);
    });
  });
}
