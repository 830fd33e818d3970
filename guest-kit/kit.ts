/**
 * The guest kit: QEMU >= 10.1 with vfio-user-pci (Debian trixie-backports'
 * qemu-system-x86, unpacked, never installed), a Debian trixie kernel with its
 * modules, and a static busybox. Provisioned once into a cache directory
 * (~/.cache/vfio-user-ts or $VFIO_USER_TS_CACHE) under a lock; a stamp file
 * marks a finished kit, which later runs reuse at once.
 */
import { execFile } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  copyFileSync,
  chmodSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createLogger, type Logger } from '../server/log.js';
import { withDirLock } from './kit-lock.js';
import { KernelModules } from './kernel-modules.js';
import { PrivateApt } from './private-apt.js';

const run = promisify(execFile);

/** Bump when the kit's layout or contents change: a new directory is provisioned. */
const KIT_VERSION = 1;

/** Modules decompressed at provisioning time (the built-in devices' drivers). */
export const DEFAULT_MODULES = ['nvme', 'gpio-pci-idio-16'];

/** What a finished kit records about itself. */
export interface KitStamp {
  kitVersion: number;
  qemuVersion: string;
  kernelRelease: string;
  kernelPackage: string;
  downloadBytes: number;
  provisionSeconds: number;
  provisionedAt: string;
}

/** A command line prefix that runs something with a private dynamic loader. */
export interface Command {
  file: string;
  args: string[];
  env: Record<string, string>;
}

/** A provisioned kit. */
export class Kit {
  readonly modules: KernelModules;

  constructor(
    readonly dir: string,
    readonly stamp: KitStamp,
  ) {
    const unxz: [string, ...string[]] = existsSync('/usr/bin/xz')
      ? ['/usr/bin/xz', '-dc']
      : [this.busybox, 'unxz', '-c'];
    this.modules = new KernelModules(join(dir, 'guest/modules'), join(dir, 'guest/ko'), unxz);
  }

  get qemuRoot(): string {
    return join(this.dir, 'qemu');
  }
  get kernel(): string {
    return join(this.dir, 'guest/vmlinuz');
  }
  get busybox(): string {
    return join(this.dir, 'guest/busybox');
  }

  /** qemu-system-x86_64 run through the kit's own loader and libraries; append machine arguments. */
  qemu(): Command {
    const root = this.qemuRoot;
    const libDirs = readFileSync(join(root, 'lib-dirs'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((d) => join(root, d));
    return {
      file: join(root, 'usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'),
      args: [
        '--library-path',
        libDirs.join(':'),
        join(root, 'usr/bin/qemu-system-x86_64'),
        '-L',
        join(root, 'usr/share/qemu'),
        '-L',
        join(root, 'usr/share/seabios'),
      ],
      env: { QEMU_MODULE_DIR: join(root, 'usr/lib/x86_64-linux-gnu/qemu') },
    };
  }
}

/** The cache directory (created on demand). */
export function cacheDir(): string {
  return process.env.VFIO_USER_TS_CACHE || join(homedir(), '.cache', 'vfio-user-ts');
}

function kitDir(): string {
  return join(cacheDir(), `kit-v${KIT_VERSION}`);
}

/** The finished kit, if there is one (never provisions). */
export function loadKit(): Kit | undefined {
  const dir = kitDir();
  try {
    const stamp = JSON.parse(readFileSync(join(dir, 'stamp.json'), 'utf8')) as KitStamp;
    if (stamp.kitVersion !== KIT_VERSION) return undefined;
    return new Kit(dir, stamp);
  } catch {
    return undefined;
  }
}

/** Why the kit cannot be provisioned on this machine, or undefined if it might be. */
export function provisioningBlocker(): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64')
    return `guest kit needs linux/x64 (this is ${process.platform}/${process.arch})`;
  for (const tool of ['/usr/bin/apt-get', '/usr/bin/dpkg'])
    if (!existsSync(tool)) return `guest kit needs ${tool} (Debian/Ubuntu)`;
  return undefined;
}

/** Returns the kit, provisioning it first if needed (idempotent, safe across processes). */
export async function ensureKit(
  log: Logger = createLogger({ pretty: false }).child({ component: 'guest-kit' }),
): Promise<Kit> {
  const ready = loadKit();
  if (ready) return ready;
  const blocker = provisioningBlocker();
  if (blocker) throw new Error(blocker);
  mkdirSync(cacheDir(), { recursive: true });
  return withDirLock(`${kitDir()}.lock`, 15 * 60_000, async () => {
    const again = loadKit();
    if (again) return again;
    try {
      return await provision(log);
    } catch (err) {
      rmSync(`${kitDir()}.partial`, { recursive: true, force: true });
      throw err;
    }
  });
}

function dirBytes(files: string[]): number {
  return files.reduce((sum, f) => sum + statSync(f).size, 0);
}

async function provision(log: Logger): Promise<Kit> {
  const started = Date.now();
  const final = kitDir();
  const work = `${final}.partial`;
  rmSync(work, { recursive: true, force: true });
  rmSync(final, { recursive: true, force: true });
  mkdirSync(join(work, 'guest'), { recursive: true });
  const apt = new PrivateApt(join(work, 'apt'));
  log.info(
    { mirror: apt.mirror, dir: final },
    'provisioning guest kit (QEMU from trixie-backports, trixie kernel, busybox)',
  );
  await apt.update();

  // QEMU and everything it links, for an empty system.
  const qemuDebs = await apt.downloadWithDependencies(['qemu-system-x86'], 'trixie-backports');
  log.info({ debs: qemuDebs.length, bytes: dirBytes(qemuDebs) }, 'QEMU and its libraries downloaded; unpacking');
  const qemuRoot = join(work, 'qemu');
  mkdirSync(qemuRoot);
  for (const deb of qemuDebs) await run('dpkg', ['-x', deb, qemuRoot]);
  writeFileSync(join(qemuRoot, 'lib-dirs'), libraryDirs(qemuRoot).join('\n') + '\n');

  // The kernel the linux-image-amd64 metapackage of trixie points at, and busybox.
  const depends = await apt.apt('apt-cache', ['depends', 'linux-image-amd64/trixie']);
  const kernelPackage = /Depends:\s*(linux-image-6\.12\.[0-9A-Za-z.+~-]+-amd64)\b/.exec(depends)?.[1];
  if (!kernelPackage) throw new Error(`guest kit: no linux-image-6.12.*-amd64 in trixie:\n${depends}`);
  const guestDebs = await apt.download([kernelPackage, 'busybox-static/trixie']);
  log.info({ kernelPackage, bytes: dirBytes(guestDebs) }, 'kernel and busybox downloaded; unpacking');
  const extracted = join(work, 'apt', 'extracted');
  for (const deb of guestDebs) await run('dpkg', ['-x', deb, extracted]);
  copyFileSync(join(extracted, 'usr/bin/busybox'), join(work, 'guest/busybox'));
  chmodSync(join(work, 'guest/busybox'), 0o755);
  const vmlinuz = readdirSync(join(extracted, 'boot')).find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new Error('guest kit: kernel package has no /boot/vmlinuz-*');
  const kernelRelease = vmlinuz.slice('vmlinuz-'.length);
  renameSync(join(extracted, 'boot', vmlinuz), join(work, 'guest/vmlinuz'));
  renameSync(join(extracted, 'usr/lib/modules', kernelRelease), join(work, 'guest/modules'));

  const { stdout: versionText } = await execQemuVersion(work);
  const stamp: KitStamp = {
    kitVersion: KIT_VERSION,
    qemuVersion: /version (\S+)/.exec(versionText)?.[1] ?? versionText.trim(),
    kernelRelease,
    kernelPackage,
    downloadBytes: dirBytes([...qemuDebs, ...guestDebs]),
    provisionSeconds: 0,
    provisionedAt: new Date().toISOString(),
  };
  const kit = new Kit(work, stamp);
  const order = kit.modules.loadOrder(DEFAULT_MODULES);
  log.info({ modules: order.map((m) => m.name) }, 'default guest modules decompressed');
  rmSync(join(work, 'apt'), { recursive: true, force: true });
  stamp.provisionSeconds = Math.round((Date.now() - started) / 100) / 10;
  writeFileSync(join(work, 'stamp.json'), JSON.stringify(stamp, null, 2) + '\n');
  renameSync(work, final);
  log.info(stamp, 'guest kit ready');
  return new Kit(final, stamp);
}

function execQemuVersion(dir: string): Promise<{ stdout: string }> {
  const cmd = new Kit(dir, {} as KitStamp).qemu();
  return run(cmd.file, [...cmd.args, '--version'], { env: { ...process.env, ...cmd.env } });
}

/** Library directories of the unpacked root (relative), from its ld.so.conf.d plus the multiarch default. */
function libraryDirs(root: string): string[] {
  const dirs = ['usr/lib/x86_64-linux-gnu'];
  const confDir = join(root, 'etc/ld.so.conf.d');
  if (existsSync(confDir)) {
    for (const f of readdirSync(confDir)) {
      for (const line of readFileSync(join(confDir, f), 'utf8').split('\n')) {
        const d = line.trim().replace(/^\/+/, '');
        if (!d || d.startsWith('#') || d.startsWith('include')) continue;
        const inRoot = d.replace(/^lib\//, 'usr/lib/');
        if (!dirs.includes(inRoot) && existsSync(join(root, inRoot))) dirs.push(inRoot);
      }
    }
  }
  return dirs;
}
