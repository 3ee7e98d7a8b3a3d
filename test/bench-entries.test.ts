// The addon's bench entry points are optional (the `bench` cargo feature): reached by name at
// call time, they either run or say which feature is missing.
import { describe, expect, it } from 'vitest';
import { benchEntry } from '../ts/binding.js';
import { RemoteStore, Store } from '../ts/index.js';
import { tempCluster } from './helpers.js';

const MISSING = 'this build has no bench entry points (built without the `bench` feature)';

describe('bench entry points', () => {
  it('run from this build, which has the default features', async () => {
    const timer = benchEntry('benchTimer')(16);
    expect(timer.count).toBe(16);
    expect(timer.minNs).toBeLessThanOrEqual(timer.p50Ns);
    const copy = await benchEntry('benchMemcpy')(64, 8);
    expect(copy.count).toBe(8);
  });

  it('throw naming the feature when the loaded addon lacks them', () => {
    const without = { precompileCounters: () => ({}) };
    for (const name of ['benchAdopt', 'benchMemcpy', 'benchTimer', 'benchTransport', 'benchReads', 'stressWrite', 'stressRead'] as const) {
      expect(() => benchEntry(name, without)).toThrow(`${MISSING}: ${name} is missing`);
    }
    expect(() => benchEntry('benchTimer', { benchTimer: 7 })).toThrow(MISSING);
  });

  it('reach the native objects behind Store and RemoteStore', async () => {
    const cluster = tempCluster();
    const store = Store.create({ dir: cluster.dir, name: 'owner', secret: cluster.secret });
    try {
      store.set([{ id: 'k', value: Buffer.from('v'), version: 1n }]);
      const remote = await RemoteStore.connect({ dir: cluster.dir, store: 'owner', secret: cluster.secret });
      const latency = await remote.benchReads(['k'], 4);
      expect(latency.count).toBe(4);
      await expect(remote.benchReads(['nope'], 4)).rejects.toThrow(/benchReads: the owner has no object/);
    } finally {
      store.close();
      cluster.cleanup();
    }
  });
});
