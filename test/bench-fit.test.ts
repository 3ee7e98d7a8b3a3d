// The batch sweep's fit (bench/scale.ts): cost = a + b / (transactions a batch), least squares.
import { describe, expect, it } from 'vitest';
import { perBatchFit } from '../bench/scale.js';

describe('perBatchFit', () => {
  it('recovers the part per transaction and the part per batch from exact points', () => {
    const points = [8, 24, 64, 128].map((x) => [x, 8.8 + 354 / x] as const);
    const fit = perBatchFit(points);
    expect(fit?.perTx).toBeCloseTo(8.8, 9);
    expect(fit?.perBatch).toBeCloseTo(354, 9);
  });

  it('skips points without a batch size or a cost, and needs two batch sizes', () => {
    expect(
      perBatchFit([
        [0, 5],
        [16, Number.NaN],
        [32, 10],
      ]),
    ).toBeNull();
    expect(
      perBatchFit([
        [32, 10],
        [32, 11],
      ]),
    ).toBeNull();
    const fit = perBatchFit([
      [0, 99],
      [10, 3],
      [20, 2],
      [40, Number.NaN],
    ]);
    expect(fit?.perTx).toBeCloseTo(1, 9);
    expect(fit?.perBatch).toBeCloseTo(20, 9);
  });
});
