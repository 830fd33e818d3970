/**
 * The protocol target of `npm run fuzz` (test/fuzz/cli.ts): a longer protocol
 * fuzz run against a TestDevice served in this process. Fails if the server
 * stops answering, a fresh client cannot read config space afterwards, or fds
 * leaked.
 */
import { fdBaseline } from '../helpers/fds.js';
import { startDevice } from '../helpers/harness.js';
import { TEST_VENDOR } from '../helpers/test-device.js';
import { runFuzz } from './fuzzer.js';

/** Run `messages` hostile messages from `seed`; resolves true when the server came through. */
export async function protocolFuzzCli(messages: number, seed: number, batch: number | undefined): Promise<boolean> {
  const fds = fdBaseline();
  const run = await startDevice();
  const started = Date.now();
  console.log(`fuzz: ${messages} messages, seed ${seed} (0x${seed.toString(16)})`);
  let failed = false;
  try {
    const stats = await runFuzz({
      socketPath: run.socketPath,
      idle: run.idle,
      messages,
      seed,
      batch,
      onProgress: (s) => {
        if (s.messages % 10_000 < 1000)
          console.log(`  ${s.messages} messages, ${s.connections} connections, ${s.dropped} dropped`);
      },
    });
    const c = await run.connect();
    const vendor = await c.cfg16(0);
    c.close();
    if (vendor !== TEST_VENDOR) throw new Error(`config space read ${vendor.toString(16)} after the fuzz`);
    if (stats.noReplyAnswered > 0) throw new Error(`${stats.noReplyAnswered} replies to NO_REPLY messages`);
    console.log(`fuzz: ok in ${((Date.now() - started) / 1000).toFixed(1)} s`, stats);
  } catch (err) {
    failed = true;
    console.error(`fuzz: FAILED (seed ${seed}):`, err);
  } finally {
    await run.stop();
    try {
      await fds.settle();
    } catch (err) {
      failed = true;
      console.error((err as Error).message);
    }
  }
  return !failed;
}
