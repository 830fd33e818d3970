/**
 * Random config-space writes and region accesses, as a hostile or buggy
 * client might send them (those the connection lets through: it refuses
 * accesses outside a region, test/protocol/region-access.test.ts): the model
 * never throws anything but VfioUserError,
 * never changes read-only identity or the capability chain, never leaks fds.
 */
import { describe, expect, it } from 'vitest';
import { VfioUserError } from '../../../protocol/errors.js';
import { PciDevice, walkCapabilities } from '../../../server/pci/index.js';
import { IrqSetFlag, PciRegion, RegionFlag } from '../../../protocol/constants.js';
import { listOpenFds } from '../../helpers/fds.js';
import { seededRandom } from '../../helpers/random.js';

describe('hostile accesses', () => {
  it('survive 20 000 random config writes and region accesses', async () => {
    const before = listOpenFds();
    const dev = new PciDevice({
      name: 'fuzz',
      id: { vendor: 0x1b36, device: 0x0042, classCode: 0x010802 },
      bars: [
        { index: 0, size: 0x4000, type: 'mem64', read: (o) => o, write: () => undefined },
        { index: 2, size: 0x4000, memory: [{ offset: 0, size: 0x1000 }] },
        { index: 3, size: 16, type: 'io' },
      ],
      interrupts: { intx: true, msi: { vectors: 8 }, msix: { vectors: 16, bar: 4 } },
      capabilities: [{ kind: 'pm' }, { kind: 'vendor', data: new Uint8Array(8) }, { kind: 'dsn', serial: 1n }],
      express: true,
      rom: new Uint8Array(100),
    });
    const chain = walkCapabilities((o) => dev.config.u8(o)).map((c) => c.id);
    const random = seededRandom(0x5eed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    let reached = 0;
    for (let i = 0; i < 20_000; i++) {
      const index = pick([0, 1, 2, 3, 4, 5, 6, 7, 7, 7, 7, 8]);
      const size = pick([0, 1, 2, 4, 8, 3, 16, 300]);
      const offset = Math.floor(random() * (index === 7 ? 4200 : 0x4100));
      const data = new Uint8Array(size).map(() => Math.floor(random() * 256));
      const write = random() < 0.5;
      // The connection answers empty accesses itself and refuses (EINVAL) those
      // outside a region or against its READ/WRITE flag: the model never sees them.
      const info = dev.regionInfo(index);
      if (
        size > 0 &&
        BigInt(offset + size) <= info.size &&
        (info.flags & (write ? RegionFlag.WRITE : RegionFlag.READ)) !== 0
      ) {
        reached++;
        try {
          if (write) await dev.regionWrite(index, BigInt(offset), data);
          else {
            const out = await dev.regionRead(index, BigInt(offset), size);
            expect(out.length).toBe(size);
          }
        } catch (err) {
          expect(err).toBeInstanceOf(VfioUserError);
        }
      }
      if (i % 1000 === 0) {
        // A loopback trigger or a disable, as the connection lets them through: an index
        // the device has, vectors within it (test/protocol/irqs.test.ts: the rest is EINVAL).
        const irqIndex = Math.floor(random() * 6);
        const count = Math.floor(random() * 3);
        if (irqIndex < dev.numIrqs && count <= dev.irqInfo(irqIndex).count) {
          try {
            dev.setIrqs(
              { flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, index: irqIndex, start: 0, count },
              [],
            );
          } catch (err) {
            expect(err).toBeInstanceOf(VfioUserError);
          }
        }
      }
    }
    // FLRs may have been triggered along the way; let them finish.
    await dev.regionRead(PciRegion.CONFIG, 0n, 4);
    expect(reached).toBeGreaterThan(5000);
    expect(dev.config.u16(0x00)).toBe(0x1b36);
    expect(dev.config.u16(0x02)).toBe(0x0042);
    expect(dev.config.u32(0x08) >>> 8).toBe(0x010802);
    expect(walkCapabilities((o) => dev.config.u8(o)).map((c) => c.id)).toEqual(chain);
    dev.close();
    expect(listOpenFds()).toEqual(before);
  });
});
