/** Seeded pseudo-random numbers, so a failing randomized test is reproducible. */

/** mulberry32: each call returns the next unsigned 32-bit value of the sequence seeded by `seed`. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** A seeded stand-in for Math.random: floats in [0, 1) from mulberry32(seed). */
export function seededRandom(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 0x100000000;
}
