/**
 * The rules of polling's back-off on a busy host (devices/nvme/poll-backoff.ts),
 * with the times passed in: no clock, nothing timed.
 */
import { describe, expect, it } from 'vitest';
import { PollBackoff } from '../../devices/nvme/poll-backoff.js';

/** A slice of 0.2 ms that ran undisturbed, and one that was descheduled for 3 ms of its 3.2. */
const clean = (b: PollBackoff, now: number): boolean => b.slice(now, 0.2, 0);
const descheduled = (b: PollBackoff, now: number): boolean => b.slice(now, 3.2, 3);

describe('polling back-off', () => {
  it('keeps polling while slices run undisturbed or lose at most half their time', () => {
    const b = new PollBackoff();
    for (let t = 0; t < 100; t++) expect(clean(b, t)).toBe(false);
    expect(b.slice(100, 0.4, 0.2)).toBe(false); // exactly half: still polling
    expect(b.allows(100)).toBe(true);
    expect(b.stats.trips).toBe(0);
  });

  it('stops polling when a slice was mostly descheduled, for 10 ms at first', () => {
    const b = new PollBackoff();
    expect(descheduled(b, 50)).toBe(true);
    expect(b.allows(50)).toBe(false);
    expect(b.allows(59.9)).toBe(false);
    expect(b.allows(60)).toBe(true);
    expect(b.stats).toEqual({ trips: 1, backoffMs: 10 });
  });

  it('doubles the back-off while probes keep finding the host busy, up to 1 s', () => {
    const b = new PollBackoff();
    let now = 0;
    const lengths: number[] = [];
    for (let i = 0; i < 10; i++) {
      expect(descheduled(b, now)).toBe(true);
      lengths.push(b.stats.backoffMs);
      now += b.stats.backoffMs; // the probe right after the back-off ends
      expect(b.allows(now)).toBe(true);
      expect(clean(b, now)).toBe(false); // a few clean probes do not reset it
    }
    expect(lengths).toEqual([10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
  });

  it('halves the back-off after every 50 slices in a row that ran undisturbed', () => {
    const b = new PollBackoff();
    for (let i = 0; i < 4; i++) descheduled(b, i * 1000);
    expect(b.stats.backoffMs).toBe(80);
    let now = 5000;
    for (let i = 0; i < 49; i++) clean(b, now++);
    descheduled(b, now); // 49 clean slices were not enough: doubles again
    expect(b.stats.backoffMs).toBe(160);
    now += 1000;
    for (let i = 0; i < 100; i++) clean(b, now++); // eased twice: 160 -> 80 -> 40
    descheduled(b, now);
    expect(b.stats.backoffMs).toBe(80); // the next trip doubles from 40
    now += 1000;
    for (let i = 0; i < 200; i++) clean(b, now++); // 80 -> 40 -> 20 -> 10 -> none
    descheduled(b, now);
    expect(b.stats.backoffMs).toBe(10); // starts from the first back-off again
    expect(b.allows(now + 10)).toBe(true);
    expect(b.stats.trips).toBe(7);
  });
});
