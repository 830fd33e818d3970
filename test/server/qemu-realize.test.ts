/**
 * Real QEMU (the guest kit's 11.1) against the protocol core: QEMU realizes a
 * vfio-user-pci device served by DeviceServer (CPUs stopped with -S, no guest),
 * which runs VERSION, DMA_MAP of guest RAM, GET_INFO, REGION_INFO, config
 * reads/writes, SET_IRQS and the machine-reset sequence (DEVICE_RESET). Every
 * request must succeed; when QEMU goes, the device is detached. Once with
 * plain RAM (fd-less maps) and once with a shared memfd backend (mmapped).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { beforeAll, describe, expect } from 'vitest';
import { PciDevice } from '../../server/pci/index.js';
import { serve } from '../../server/server.js';
import { guestTest, requireKit } from '../guest/guest-test.js';
import { isCI } from '../guest/global-setup.js';
import { ensureKit } from '../../guest-kit/kit.js';

interface LogLine {
  level: number;
  msg: string;
  cmd?: string;
  result?: unknown;
}

function recordingLogger(lines: LogLine[], onLine: () => void): pino.Logger {
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as LogLine);
      onLine();
      done();
    },
  });
  return pino({ level: 'debug' }, stream);
}

// This file runs in the unit project (no kit globalSetup): under CI=true make
// sure the kit exists (cached after the first time) instead of failing on a fresh machine.
beforeAll(async () => {
  if (isCI()) await ensureKit();
});

describe.each([
  ['plain RAM', false],
  ['shared memfd RAM', true],
] as const)('QEMU realizes a device (%s)', (_name, shared) => {
  guestTest(
    'every request of realize and reset succeeds; the device is detached when QEMU goes',
    async () => {
      const kit = requireKit();
      const dir = mkdtempSync(join(tmpdir(), 'vfu-qemu-'));
      const path = join(dir, 'dev.sock');
      const lines: LogLine[] = [];
      let check = (): void => {};
      const log = recordingLogger(lines, () => check());
      const regs = new Uint32Array(1024);
      const dev = new PciDevice({
        name: 'realize',
        log,
        id: { vendor: 0x1b36, device: 0x0005, classCode: 0xff0000, revision: 1 },
        bars: [
          {
            index: 0,
            size: 0x1000,
            type: 'mem32',
            read: (o: number) => regs[o >> 2]!,
            write: (o: number, _s: number, v: number) => {
              regs[o >> 2] = v;
            },
          },
        ],
        interrupts: { intx: true, msix: { vectors: 4, bar: 4 } },
      });
      const server = await serve(dev, { socketPath: path, log });
      let qemu: ChildProcess | undefined;
      try {
        const cmd = kit.qemu();
        const args = [
          ...cmd.args,
          '-accel',
          'tcg',
          '-machine',
          shared ? 'q35,memory-backend=mem' : 'q35',
          '-m',
          '128M',
          '-S',
          '-nodefaults',
          '-display',
          'none',
          '-monitor',
          'none',
          '-serial',
          'none',
          ...(shared ? ['-object', 'memory-backend-memfd,id=mem,size=128M,share=on'] : []),
          '-device',
          JSON.stringify({ driver: 'vfio-user-pci', socket: { type: 'unix', path } }),
        ];
        let stderr = '';
        qemu = spawn(cmd.file, args, { env: { ...process.env, ...cmd.env }, stdio: ['ignore', 'ignore', 'pipe'] });
        qemu.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
        const exited = new Promise<string>((resolve) =>
          qemu!.once('exit', (code) => resolve(`QEMU exited (${code}): ${stderr}`)),
        );
        // Realize is done and the machine reset ran once the BARs were zeroed after DEVICE_RESET.
        const done = new Promise<void>((resolve) => {
          check = () => {
            const reset = lines.findIndex((l) => l.cmd === 'DEVICE_RESET' && l.result === 'ok');
            if (
              reset >= 0 &&
              lines.slice(reset).filter((l) => l.cmd === 'REGION_WRITE' && l.result === 'ok').length >= 6
            )
              resolve();
          };
        });
        const outcome = await Promise.race([done.then(() => 'ok'), exited]);
        expect(outcome).toBe('ok');
        const requests = lines.filter((l) => l.cmd !== undefined && l.result !== undefined);
        expect(requests.filter((l) => l.result !== 'ok')).toEqual([]);
        expect(lines.filter((l) => l.level >= 40)).toEqual([]);
        const seen = new Set(requests.map((l) => l.cmd));
        for (const c of [
          'DMA_MAP',
          'DEVICE_GET_INFO',
          'DEVICE_GET_REGION_INFO',
          'DEVICE_GET_IRQ_INFO',
          'REGION_READ',
          'REGION_WRITE',
          'DEVICE_SET_IRQS',
          'DEVICE_RESET',
        ]) {
          expect(seen, c).toContain(c);
        }
        expect(dev.dma.regions.length).toBeGreaterThan(0);
        expect(dev.dma.regions.some((r) => r.mapping !== undefined)).toBe(shared);
        const gone = new Promise((r) => server.once('disconnect', r));
        qemu.kill('SIGTERM');
        await exited;
        await gone;
        expect(dev.dma.regions.length).toBe(0);
      } finally {
        if (qemu?.exitCode === null) qemu.kill('SIGKILL');
        await server.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
    120_000,
  );
});
