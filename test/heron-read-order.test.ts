// The order a replica tries the replicas of another partition for its remote reads: spread by
// its own index, with peers that just failed (gone, or silent until the timeout) tried last.
import { describe, expect, it } from 'vitest';
import { readOrder } from '../ts/heron/remote-reads.js';

describe('readOrder', () => {
  it('starts at the reader index round the candidates', () => {
    const none = () => false;
    expect(readOrder([0, 1, 2], 0, none)).toEqual([0, 1, 2]);
    expect(readOrder([0, 1, 2], 2, none)).toEqual([2, 0, 1]);
    expect(readOrder([0, 2], 2, none)).toEqual([0, 2]);
    expect(readOrder([], 1, none)).toEqual([]);
  });

  it('tries suspect peers last, keeping both groups in order, and still tries them', () => {
    expect(readOrder([0, 1, 2], 2, (q) => q === 2)).toEqual([0, 1, 2]);
    expect(readOrder([0, 1, 2], 1, (q) => q === 1)).toEqual([2, 0, 1]);
    expect(readOrder([0, 1, 2, 3], 1, (q) => q === 1 || q === 3)).toEqual([2, 0, 1, 3]);
    expect(readOrder([0, 1, 2], 1, () => true)).toEqual([1, 2, 0]);
  });
});
