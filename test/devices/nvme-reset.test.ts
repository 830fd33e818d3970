/**
 * "A controller reset always completes" (issue 13), as a tested invariant:
 * every way to reset the NVMe controller (CC.EN 1 -> 0, CC.SHN, PCIe FLR,
 * DEVICE_RESET, client disconnect) finishes within a bound whatever is in
 * flight, and a fresh admin queue answers Identify afterwards. In flight:
 *
 * - file I/O the host has not finished (every thread-pool thread blocked:
 *   thread-pool-stall.ts);
 * - completions waiting for room in a CQ the guest does not drain;
 * - a Delete I/O SQ waiting for its queue's commands;
 * - DMA by messages the client does not answer (fd-less guest memory behind
 *   a proxy that holds the server's DMA requests: stalling-proxy.ts).
 *
 * Commands aborted by a reset post nothing: once the stall is lifted, the
 * fresh queues see no stale completion.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { COMMAND_MEMORY_MASTER, expectOk, GPA, Layout, NvmeGuest, NvmeTestHost, type Sqe } from './nvme-driver.js';
import { StallingProxy } from './stalling-proxy.js';
import { ThreadPoolStall } from './thread-pool-stall.js';

/** The controller's bound for waiting on commands in flight during a reset (NvmeControllerOptions.resetTimeoutMs). */
const RESET_MS = 500;
/** What the test allows a reset to take: the bound plus scheduling slack. */
const WITHIN_MS = RESET_MS + 1000;
/**
 * A disconnect may also wait for the device to release guest memory a stuck
 * host still holds (pinned under file I/O): the PCI layer's bound, which
 * the controller sets 1 s above its own (NvmeController's resetTimeoutMs).
 */
const DISCONNECT_WITHIN_MS = RESET_MS + 1000 + 1000;
const CC = 0x14;
const CSTS = 0x1c;
const SHN_NORMAL = 1 << 14;
const SHST_COMPLETE = 2 << 2;
const PCI_COMMAND = 0x04;
const gpa = (off: number): bigint => GPA + BigInt(off);

type Work = 'file I/O' | 'a full CQ' | 'a queue mid-delete' | 'DMA by messages';
type Reset = 'CC.EN 1 -> 0' | 'CC.SHN' | 'FLR' | 'DEVICE_RESET' | 'client disconnect';

let dir: TempDir;
let host: NvmeTestHost;
/** The driver the test uses: `host` itself, or a client through the proxy. */
let guest: NvmeGuest;
let stall: ThreadPoolStall | undefined;
let proxy: StallingProxy | undefined;
const extraGuests: NvmeGuest[] = [];

beforeEach(() => {
  dir = tempDir('nvme-reset-');
});
afterEach(async () => {
  await stall?.release();
  stall = undefined;
  proxy?.release();
  for (const g of extraGuests.splice(0)) g.close();
  if (guest !== host) guest.close();
  proxy?.close();
  proxy = undefined;
  await host.stop();
  dir.remove();
});

/** A 1 MiB write of namespace 1 at `slba` (PRP list in PRP_LISTS). */
function mibWrite(g: NvmeGuest, slba: number): Sqe {
  const v = g.view;
  for (let p = 1; p < 256; p++) v.setBigUint64(Layout.PRP_LISTS + (p - 1) * 8, gpa(Layout.DATA + p * 4096), true);
  return g.rw(1, 1, slba, 2048, gpa(Layout.DATA), gpa(Layout.PRP_LISTS));
}

/** Serve a controller; the guest uses fd-backed memory, or fd-less memory behind the proxy for DMA messages. */
async function setUp(work: Work): Promise<void> {
  host = await NvmeTestHost.start({
    name: 'nvme-reset',
    namespaces: [{ path: dir.file('ns1.img'), size: 16 << 20, lbaSize: 512 }],
    queues: 2,
    resetTimeoutMs: RESET_MS,
  });
  guest = host;
  if (work === 'DMA by messages') {
    proxy = await StallingProxy.open(host.socketPath);
    host.close(); // the in-process driver leaves; the proxied one takes over
    guest = await connectWhenFree(proxy.path, false);
  }
  await guest.enable();
  await guest.createIoQueues();
}

/** Connect a new guest once the server takes the next client (it serves one at a time). */
async function connectWhenFree(path: string, shared = true): Promise<NvmeGuest> {
  for (let i = 0; ; i++) {
    try {
      return await NvmeGuest.connect(path, shared, { timeoutMs: 2000 });
    } catch (err) {
      if (i > 50) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Put `work` in flight. */
async function load(work: Work): Promise<void> {
  switch (work) {
    case 'file I/O':
      stall = await ThreadPoolStall.start(dir.path);
      for (let i = 0; i < 4; i++) guest.place(1, mibWrite(guest, i * 2048));
      await guest.ring(1);
      break;
    case 'a full CQ':
      expectOk(await guest.admin({ opcode: 0x00, cdw10: 1 }));
      expectOk(await guest.admin({ opcode: 0x04, cdw10: 1 }));
      await guest.createQueuePair({ qid: 1, sqAt: Layout.IO_SQ, cqAt: Layout.IO_CQ, sqSize: 64, cqSize: 2 });
      for (let i = 0; i < 40; i++) guest.place(1, { opcode: 0x00, nsid: 1 });
      await guest.ring(1);
      break;
    case 'a queue mid-delete':
      stall = await ThreadPoolStall.start(dir.path);
      for (let i = 0; i < 4; i++) guest.place(1, mibWrite(guest, i * 2048));
      await guest.ring(1);
      guest.place(0, { opcode: 0x00, cdw10: 1 });
      await guest.ring(0);
      break;
    case 'DMA by messages':
      proxy!.stallDma = true;
      for (let i = 0; i < 4; i++) guest.place(1, mibWrite(guest, i * 2048));
      await guest.ring(1);
      break;
  }
  await new Promise((r) => setTimeout(r, 50));
  if (work !== 'a full CQ') expect(guest.peek(1)).toBeUndefined(); // really in flight
  if (work === 'a queue mid-delete') expect(guest.peek(0)).toBeUndefined();
  if (work === 'DMA by messages') expect(proxy!.heldRequests).toBeGreaterThan(0);
}

/** Reset the controller the way `reset` says; resolves when the reset is seen to be done. */
async function reset(kind: Reset): Promise<void> {
  switch (kind) {
    case 'CC.EN 1 -> 0':
      await guest.setReg(CC, 0);
      await guest.waitReg(CSTS, 1, 0, WITHIN_MS);
      break;
    case 'CC.SHN':
      await guest.setReg(CC, (await guest.reg(CC)) | SHN_NORMAL);
      await guest.waitReg(CSTS, 3 << 2, SHST_COMPLETE, WITHIN_MS);
      break;
    case 'FLR': {
      const express = host.nvme.device.capabilities.express!;
      await guest.client.cfgWrite16(express + 8, (await guest.client.cfg16(express + 8)) | (1 << 15));
      expect(await guest.client.cfg16(0)).toBe(0x4e58); // config space answers
      await guest.waitReg(CSTS, 1, 0, WITHIN_MS);
      break;
    }
    case 'DEVICE_RESET':
      await guest.client.reset();
      break;
    case 'client disconnect':
      guest.close();
      guest = await connectWhenFree(host.socketPath);
      extraGuests.push(guest);
      break;
  }
}

/**
 * Check a fresh admin queue answers Identify (with the host's file I/O
 * still stuck: Identify needs none), then lift whatever held the work up
 * and check nothing stale arrives. A client that held DMA requests answers
 * them again first (the point was that the reset did not need them).
 */
async function checkUsable(kind: Reset): Promise<void> {
  proxy?.release();
  if (kind === 'CC.SHN') {
    await guest.setReg(CC, 0);
    await guest.waitReg(CSTS, 1, 0, WITHIN_MS);
  }
  if (kind === 'FLR' || kind === 'DEVICE_RESET') await guest.client.cfgWrite16(PCI_COMMAND, COMMAND_MEMORY_MASTER);
  await guest.enable(WITHIN_MS);
  expectOk((await guest.identify(1, 0, WITHIN_MS)).cqe);
  await stall?.release();
  await new Promise((r) => setTimeout(r, 100));
  expect(guest.peek(0)).toBeUndefined(); // no stale completion in the fresh admin queue
  await guest.createIoQueues();
  expectOk(await guest.io({ opcode: 0x00, nsid: 1 }, WITHIN_MS));
  expect(guest.peek(1)).toBeUndefined();
}

const WORK: Work[] = ['file I/O', 'a full CQ', 'a queue mid-delete', 'DMA by messages'];
const RESETS: Reset[] = ['CC.EN 1 -> 0', 'CC.SHN', 'FLR', 'DEVICE_RESET', 'client disconnect'];

describe.each(WORK)('with %s in flight', (work) => {
  it.each(RESETS)(`%s completes within ${WITHIN_MS} ms and the controller works after`, async (kind) => {
    await setUp(work);
    await load(work);
    const t0 = Date.now();
    await reset(kind);
    expect(Date.now() - t0).toBeLessThan(kind === 'client disconnect' ? DISCONNECT_WITHIN_MS : WITHIN_MS);
    await checkUsable(kind);
  });
});
