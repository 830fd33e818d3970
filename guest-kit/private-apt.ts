/**
 * apt-get against a private, throwaway configuration: our own sources list
 * (Debian trixie + trixie-backports from the machine's own mirror), lists,
 * empty dpkg status, no pinning, amd64 only, and archives directory (the host's
 * apt.conf.d still applies, e.g. its proxy). Nothing on the machine is installed
 * or changed; signatures are checked with the Debian archive keyring.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { debianMirror } from './debian-mirror.js';

const run = promisify(execFile);

const SYSTEM_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';

/** A private apt setup rooted at `dir`. */
export class PrivateApt {
  readonly archives: string;
  private keyring = SYSTEM_KEYRING;

  constructor(
    readonly dir: string,
    readonly mirror = debianMirror(),
  ) {
    this.archives = join(dir, 'archives');
  }

  private options(): string[] {
    const d = this.dir;
    return [
      '-o',
      `Dir::Etc::sourcelist=${join(d, 'sources.list')}`,
      '-o',
      'Dir::Etc::sourceparts=-',
      '-o',
      `Dir::State::Lists=${join(d, 'lists')}`,
      '-o',
      `Dir::State::status=${join(d, 'status')}`,
      '-o',
      `Dir::Cache=${join(d, 'cache')}`,
      '-o',
      `Dir::Cache::archives=${this.archives}`,
      '-o',
      'Debug::NoLocking=1',
      '-o',
      `Dir::Etc::preferences=${join(d, 'preferences')}`,
      '-o',
      `Dir::Etc::preferencesparts=${join(d, 'preferences.d')}`,
      '-o',
      'APT::Architecture=amd64',
      '-o',
      'APT::Architectures=amd64',
      '-o',
      'APT::Sandbox::User=root',
      '-o',
      'Acquire::Retries=3',
    ];
  }

  private writeSources(): void {
    const opt = `[arch=amd64 signed-by=${this.keyring}]`;
    writeFileSync(
      join(this.dir, 'sources.list'),
      `deb ${opt} ${this.mirror} trixie main\ndeb ${opt} ${this.mirror} trixie-backports main\n`,
    );
  }

  /** Runs apt-get (or apt-cache) with the private options; returns stdout. */
  async apt(tool: 'apt-get' | 'apt-cache', args: string[], cwd = this.dir): Promise<string> {
    try {
      const { stdout } = await run(tool, [...this.options(), ...args], { cwd, maxBuffer: 64 << 20 });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string; message: string };
      throw new Error(`${tool} ${args.join(' ')} failed: ${e.stderr || e.stdout || e.message}`, { cause: err });
    }
  }

  /** Creates the directories and fetches the package lists (falls back to a newer keyring if trixie's keys are missing). */
  async update(): Promise<void> {
    for (const sub of ['lists/partial', 'archives/partial', 'cache', 'download', 'preferences.d'])
      mkdirSync(join(this.dir, sub), { recursive: true });
    writeFileSync(join(this.dir, 'status'), '');
    this.writeSources();
    try {
      await this.apt('apt-get', ['--error-on=any', 'update']);
    } catch (err) {
      if (!/NO_PUBKEY|not signed|EXPKEYSIG|KEYEXPIRED/.test(String(err))) throw err;
      this.keyring = await newerSystemKeyring(this.dir);
      this.writeSources();
      await this.apt('apt-get', ['--error-on=any', 'update']);
    }
  }

  /** Downloads `packages` and all their dependencies (as for an empty system) into `archives`. */
  async downloadWithDependencies(packages: string[], targetRelease?: string): Promise<string[]> {
    const release = targetRelease ? ['-t', targetRelease] : [];
    await this.apt('apt-get', ['--download-only', '--no-install-recommends', '-y', 'install', ...release, ...packages]);
    return readdirSync(this.archives)
      .filter((f) => f.endsWith('.deb'))
      .map((f) => join(this.archives, f));
  }

  /** Downloads exactly these packages (no dependencies); returns the .deb paths. */
  async download(packages: string[]): Promise<string[]> {
    const dir = join(this.dir, 'download');
    await this.apt('apt-get', ['download', ...packages], dir);
    return readdirSync(dir)
      .filter((f) => f.endsWith('.deb'))
      .map((f) => join(dir, f));
  }
}

/**
 * bookworm's first keyrings lacked trixie's keys. The machine's own apt (which
 * trusts bookworm's keys) fetches the newest debian-archive-keyring it knows
 * (bookworm-updates/backports), verified as usual; we use its keyring file.
 */
async function newerSystemKeyring(dir: string): Promise<string> {
  const out = join(dir, 'keyring');
  mkdirSync(out, { recursive: true });
  const download = (): Promise<unknown> =>
    run('apt-get', ['-o', 'APT::Sandbox::User=root', 'download', 'debian-archive-keyring'], { cwd: out });
  try {
    await download();
  } catch {
    // The system's lists are missing or stale: refresh them (only now), then retry.
    await run('apt-get', ['update'], { maxBuffer: 64 << 20 });
    await download();
  }
  const deb = readdirSync(out).find((f) => f.endsWith('.deb'));
  if (!deb) throw new Error('guest kit: could not download a newer debian-archive-keyring');
  await run('dpkg', ['-x', join(out, deb), join(out, 'root')]);
  const keyring = join(out, 'root/usr/share/keyrings/debian-archive-keyring.gpg');
  if (!existsSync(keyring)) throw new Error('guest kit: debian-archive-keyring .deb has no keyring');
  return keyring;
}
