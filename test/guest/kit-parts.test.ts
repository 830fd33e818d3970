/** The guest kit's pieces that need no VM: the cpio writer (checked with busybox cpio), apt source parsing, module deps. */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { writeCpio } from '../../guest-kit/cpio.js';
import { parseDeb822Sources, parseOneLineSources, debianMirror } from '../../guest-kit/debian-mirror.js';
import { moduleDepends, moduleName } from '../../guest-kit/kernel-modules.js';
import { guestTest, requireKit } from './guest-test.js';

describe('cpio (newc) writer', () => {
  guestTest('busybox cpio lists and extracts what we wrote', async () => {
    const kit = requireKit();
    const archive = writeCpio([
      { type: 'dir', path: 'etc' },
      { type: 'file', path: 'etc/hello', data: 'hi there\n' },
      { type: 'file', path: '/odd', data: new Uint8Array([1, 2, 3]) },
      { type: 'symlink', path: 'link', target: 'etc/hello' },
      { type: 'char', path: 'console', major: 5, minor: 1 },
    ]);
    expect(archive.length % 4).toBe(0);
    const list = execFileSync(kit.busybox, ['cpio', '-t'], {
      input: archive,
      stdio: ['pipe', 'pipe', 'ignore'],
    }).toString();
    expect(list.trim().split('\n')).toEqual(['etc', 'etc/hello', 'odd', 'link', 'console']);
    const verbose = execFileSync(kit.busybox, ['cpio', '-tv'], {
      input: archive,
      stdio: ['pipe', 'pipe', 'ignore'],
    }).toString();
    expect(verbose).toMatch(/^lrwxrwxrwx .* link -> etc\/hello$/m);
    expect(verbose).toMatch(/^crw------- .* console$/m);
    const hello = execFileSync(kit.busybox, ['cpio', '-i', '--to-stdout', 'etc/hello'], {
      input: archive,
      stdio: ['pipe', 'pipe', 'ignore'],
    }).toString();
    expect(hello).toBe('hi there\n');
  });

  it('rejects paths that escape the archive root', () => {
    expect(() => writeCpio([{ type: 'file', path: '../x', data: '' }])).toThrow(/bad path/);
    expect(() => writeCpio([{ type: 'file', path: '', data: '' }])).toThrow(/bad path/);
  });
});

describe('apt sources parsing (mirror discovery)', () => {
  it('reads deb822 and one-line sources and picks the main archive, not security', () => {
    const deb822 = parseDeb822Sources(
      [
        'Types: deb',
        'URIs: http://security.example/debian-security',
        'Suites: bookworm-security',
        'Components: main',
        '',
        'Types: deb deb-src',
        '# a comment',
        'URIs: http://mirror.example/debian/',
        'Suites: bookworm bookworm-updates',
        'Components: main contrib',
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg',
      ].join('\n'),
    );
    expect(deb822).toHaveLength(2);
    expect(debianMirror(deb822, {})).toBe('http://mirror.example/debian');
    const oneLine = parseOneLineSources(
      '# x\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\ndeb-src http://m.example/debian bookworm main\n',
    );
    expect(oneLine).toEqual([
      { uri: 'http://m.example/debian', suites: ['bookworm'], components: ['main'], signedBy: '/k.gpg' },
    ]);
    expect(() =>
      debianMirror([{ uri: 'https://repo.example/node', suites: ['nodistro'], components: ['main'] }], {}),
    ).toThrow(/no Debian mirror/);
  });
});

describe('kernel module dependencies', () => {
  it('reads depends= from modinfo strings and canonicalises names', () => {
    const ko = Buffer.from('\x7fELF...\0license=GPL\0depends=nvme-core,nvme_auth\0name=nvme\0', 'latin1');
    expect(moduleDepends(ko)).toEqual(['nvme_core', 'nvme_auth']);
    expect(moduleDepends(Buffer.from('\0depends=\0name=x\0', 'latin1'))).toEqual([]);
    expect(moduleName('kernel/drivers/gpio/gpio-pci-idio-16.ko.xz')).toBe('gpio_pci_idio_16');
  });
});
