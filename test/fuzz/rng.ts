/**
 * The guest fuzzers' seeded randomness: mulberry32 from a seed, so the
 * action list of a seed is the same on every run and every machine.
 */
import { mulberry32 } from '../helpers/random.js';

export class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** The next unsigned 32-bit value. */
  u32(): number {
    return this.next();
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return this.next() % n;
  }
  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() / 0x100000000 < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  /** Pick by weight: `[[weight, value], ...]`. */
  weighted<T>(choices: ReadonlyArray<readonly [number, T]>): T {
    const total = choices.reduce((s, [w]) => s + w, 0);
    let r = this.int(total);
    for (const [w, v] of choices) {
      if (r < w) return v;
      r -= w;
    }
    return choices[choices.length - 1]![1];
  }
  /** A 64-bit value as a hex string (JSON-safe), often an interesting one. */
  u64(): string {
    if (this.chance(0.5)) return this.pick(INTERESTING_64);
    return '0x' + ((BigInt(this.u32()) << 32n) | BigInt(this.u32())).toString(16);
  }
  /** A 32-bit value, often an interesting one. */
  interesting32(): number {
    return this.chance(0.6) ? this.pick(INTERESTING_32) : this.u32();
  }
}

/** Values that sit on the edges of fields and ranges. */
const INTERESTING_32 = [
  0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 0x7f, 0x80, 0xff, 0x100, 0x3ff, 0x400, 0xfff, 0x1000, 0xffff, 0x10000,
  0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
];
const INTERESTING_64 = [
  '0x0',
  '0x1',
  '0xfff',
  '0x1000',
  '0xffffffff',
  '0x100000000',
  '0x7fffffffffffffff',
  '0x8000000000000000',
  '0xfffffffffffff000',
  '0xffffffffffffffff',
];
