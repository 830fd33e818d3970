/** The controller's bounce-buffer budget (devices/nvme/buffer-budget.ts): never more than its limit, first come first served. */
import { describe, expect, it } from 'vitest';
import { BufferBudget } from '../../devices/nvme/buffer-budget.js';

describe('NVMe bounce-buffer budget', () => {
  it('reserves up to the limit, makes the rest wait in order, and lets them go as buffers come back', async () => {
    const b = new BufferBudget(4);
    const order: string[] = [];
    await b.take(3);
    const big = b.take(2).then(() => order.push('big'));
    const small = b.take(1).then(() => order.push('small')); // fits, but waits behind the older one
    await Promise.resolve();
    expect([b.inUse, order]).toEqual([3, []]);
    b.release(3);
    await big;
    await small;
    expect([b.inUse, order]).toEqual([3, ['big', 'small']]);
    b.release(2);
    b.release(1);
    expect(b.inUse).toBe(0);
  });
});
