// Serial equivalence (DESIGN invariant 1) of the pipeline: the primary's state and every
// outcome equal the reference executor's over the same sequence, whatever the pre-executors do.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { App } from '../ts/app/app.js';
import type { Outcome } from '../ts/app/exec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import type { DecodedTx } from '../ts/app/tx.js';
import { loadApp } from '../ts/apps/index.js';
import { EmbeddedNode, type NodeOptions, type PreExecutorLink, type Reply } from '../ts/pipeline/node.js';
import { PreExecutor, type Feedback } from '../ts/pipeline/preexecutor.js';
import { Puller, type VersionSource } from '../ts/pipeline/pull.js';
import { DEFAULT_POLICY, type Policy } from '../ts/pipeline/scheduler.js';
import { EmbeddedSequencer, readSequence } from '../ts/pipeline/sequencer.js';
import type { PushedObject, StateUpdate } from '../ts/pipeline/state-update.js';
import { NativePrimaryStore } from '../ts/pipeline/store-adapter.js';
import { MergeThreads } from '../ts/pipeline/merge-threads.js';
import { RemoteStore, Store } from '../ts/store.js';
import { kvWorkload } from '../ts/workload.js';
import { tempCluster, xorshift } from './helpers.js';
import { decodeEffects } from '../ts/pipeline/records.js';
import type { LeaseEnd } from '../ts/pipeline/delegation.js';

type Behaviour = 'prompt' | 'slow' | 'stale' | 'silent' | 'crashes';

/**
 * Test double around a real `PreExecutor`: delivers its results late, drops the primary's
 * updates, never answers, or stops answering for good part-way through. With a `source`, it
 * pulls its inputs one-sidedly from the primary's store before executing (state update `pull`).
 */
class FaultyLink implements PreExecutorLink {
  readonly pre: PreExecutor;
  private readonly puller: Puller | null;
  private handled = 0;
  crashed = false;
  /** Crashes the next time it is sent transactions while it holds the node's delegation lease. */
  crashOnSend = false;

  constructor(
    readonly name: string,
    app: App,
    private readonly behaviour: Behaviour,
    private readonly node: EmbeddedNode,
    private readonly rand: () => number,
    source: VersionSource | null,
    private readonly crashAfter = 2_000,
  ) {
    this.pre = new PreExecutor(app, nativeFunctions);
    this.puller = source && new Puller(source, this.pre);
  }

  send(txs: readonly DecodedTx[]): void {
    if (this.behaviour === 'silent' || this.crashed) return;
    if (this.crashOnSend && this.node.delegation?.lease?.member === this.name) {
      this.crash();
      return;
    }
    if (this.puller && !(this.behaviour === 'stale' && this.rand() < 0.7)) {
      void this.puller.refresh(txs).then(() => this.execute(txs));
    } else this.execute(txs);
  }

  /** Stops answering for good, as a killed process would. */
  crash(): void {
    this.crashed = true;
    this.node.removePreExecutor(this.name);
  }

  private execute(txs: readonly DecodedTx[]): void {
    if (this.crashed) return;
    const results = this.pre.run(txs);
    this.handled += txs.length;
    if (this.behaviour === 'crashes' && this.handled > this.crashAfter) {
      this.crash();
      return;
    }
    const deliver = () => {
      for (const [digest, table] of results) this.node.result(this.name, digest, table);
    };
    // Results go back through the event loop as they would from a socket; slow ones may miss
    // the primary's deadline.
    if (this.behaviour === 'slow') setTimeout(deliver, Math.floor(this.rand() * 8));
    else setImmediate(deliver);
  }

  sendEffects(bytes: Buffer): void {
    const effects = decodeEffects(bytes);
    if (this.behaviour === 'stale' && this.rand() < 0.7) return;
    this.pre.install(effects);
  }

  sendObjects(objects: readonly PushedObject[]): void {
    if (this.behaviour === 'stale' && this.rand() < 0.7) return;
    this.pre.installObjects(objects);
  }

  sendFeedback(feedback: Feedback): void {
    this.pre.feedback = feedback;
  }
}

interface Variant extends Pick<NodeOptions, 'policy' | 'scheduling' | 'stateUpdate' | 'delegation'> {
  /** Pre-executors join, retire gracefully and crash while transactions flow. */
  churn?: boolean;
  /** Threads the primary's merge uses (default 1). */
  threads?: number;
  /** Delegation only: the lease's member crashes, mid-lease, now and then (twice at most). */
  crashDelegates?: boolean;
  /** Delegation only: lease ends that must have happened. */
  ends?: LeaseEnd[];
  /** The members (default: one of each behaviour). */
  behaviours?: Behaviour[];
  /** The last this many transactions are submitted one at a time: batches of one. */
  serialTail?: number;
}

const jsonable = (_: string, v: unknown): unknown => (typeof v === 'bigint' ? `${v}n` : v);

describe('pipeline on one host', () => {
  let cluster: ReturnType<typeof tempCluster>;
  beforeEach(() => {
    cluster = tempCluster();
  });
  afterEach(() => cluster.cleanup());

  /** Runs `total` transactions through a node configured as `variant` and checks them. */
  async function property(total: number, variant: Variant): Promise<void> {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    const { churn, threads: threadCount, crashDelegates, ends, behaviours: members, serialTail, ...options } = variant;
    const described = [
      threadCount ? `${threadCount} merge threads` : null,
      variant.policy ?? `${DEFAULT_POLICY} (default)`,
      variant.scheduling?.hotToPrimary ? 'hotToPrimary' : null,
      `state update ${variant.stateUpdate ?? 'broadcast'}`,
      churn ? 'joins, retirements and crashes' : null,
      variant.delegation ? `delegation ${JSON.stringify(variant.delegation)}` : null,
      crashDelegates ? 'delegates crash mid-lease' : null,
    ].filter((x) => x !== null);
    console.log(`pipeline property test: seed ${seed}, ${total} transactions, ${described.join(', ')} (REMORA_SEED to replay)`);
    const rand = xorshift(seed);
    const app = loadApp('kv');
    const logDir = join(cluster.dir, 'log');
    const sequencer = new EmbeddedSequencer(logDir);
    const store = new NativePrimaryStore(Store.create({ dir: cluster.dir, name: 'primary', secret: cluster.secret }));
    const threads = threadCount && threadCount > 1 ? new MergeThreads(threadCount, nativeFunctions) : undefined;
    // A serial tail is there to put batches of one through the members: none is kept local.
    const alone = serialTail === undefined ? {} : { localWhenAlone: false };
    const node = new EmbeddedNode(app, nativeFunctions, sequencer, store, { deadlineMs: 2, ...options, ...alone, ...(threads && { mergeThreads: threads }) });
    const source = variant.stateUpdate === 'pull' ? await RemoteStore.connect({ dir: cluster.dir, store: 'primary', secret: cluster.secret }) : null;
    const links = new Map<string, FaultyLink>();
    const attach = (name: string, b: Behaviour) => {
      const link = new FaultyLink(name, app, b, node, rand, source);
      links.set(name, link);
      node.addPreExecutor(link);
    };
    const behaviours: Behaviour[] = members ?? ['prompt', 'slow', 'stale', 'silent', 'crashes'];
    for (const b of behaviours) attach(b, b);
    node.start();
    const pool = { joined: 0, retired: 0, crashed: 0 };
    const retirements: Promise<void>[] = [];
    /** Churn event k: in turn, a prompt or slow newcomer joins, a member retires, one crashes. */
    const churnOnce = (k: number) => {
      const members = node.members;
      if (k % 3 === 0 || members.length < 2) {
        attach(`joiner-${++pool.joined}`, rand() < 0.5 ? 'prompt' : 'slow');
        return;
      }
      const victim = members[Math.floor(rand() * members.length)] ?? '';
      if (k % 3 === 1) {
        pool.retired++;
        retirements.push(node.retire(victim).then(() => node.removePreExecutor(victim)));
      } else {
        pool.crashed++;
        links.get(victim)?.crash();
      }
    };

    const txs = kvWorkload({ keys: 5_000, hotKeys: 8, conflictRate: 0.3, dynamicRate: 0.1, seed });
    const replies: Reply[] = [];
    const inFlight = new Set<Promise<void>>();
    for (let i = 0; i < total; i++) {
      const next = txs.next();
      if (next.done) throw new Error('workload ended early');
      const p = node.submit(next.value).then((r) => {
        replies.push(r);
        inFlight.delete(p);
      });
      inFlight.add(p);
      if (churn && i % 1000 === 999) churnOnce(Math.floor(i / 1000));
      // Arms the lease's member (only it) to crash when next sent work while it holds the lease.
      const lease = node.delegation?.lease;
      if (crashDelegates && lease && i % 500 === 499) {
        const crashed = [...links.values()].filter((l) => l.crashOnSend && l.crashed).length;
        for (const l of links.values()) if (!l.crashed) l.crashOnSend = crashed < 2 && l.name === lease.member;
      }
      // A window of outstanding transactions, as many clients would keep.
      if (inFlight.size >= 512) await Promise.race(inFlight);
      if (serialTail !== undefined && i >= total - serialTail - 1) await Promise.all(inFlight);
    }
    await Promise.all(inFlight);
    // Every graceful retirement completes: what a retiring member owed came back or was applied.
    await Promise.all(retirements);
    // Nothing is held for a transaction once it is answered, whatever its results did, except
    // results still owed by members that were handed it.
    const owed = node.poolStats().reduce((n, m) => n + m.outstanding, 0);
    expect(node.heldDigests).toBe(owed);
    const digest = store.digest();
    const stats = { ...node.stats };
    await sequencer.close();
    await threads?.close();
    store.store.close();
    const delegation = node.delegation
      ? { ...node.delegation.stats, crashedDelegates: [...links.values()].filter((l) => l.crashOnSend && l.crashed).length }
      : null;
    console.log(JSON.stringify({ stats, pool: node.poolStats(), churn: pool, hot: node.scheduler.hot.size, delegation }));

    const entries = await readSequence(logDir);
    expect(entries.length).toBe(total - replies.filter((r) => r.duplicate).length);
    const reference = executeSequentially(app, entries, nativeFunctions);
    expect(digest).toBe(reference.state.digest());
    const byTs = new Map<bigint, Outcome | null>(replies.filter((r) => !r.duplicate).map((r) => [r.ts, r.outcome]));
    const differing = [...reference.outcomes]
      .filter(([ts, outcome]) => JSON.stringify(byTs.get(ts), jsonable) !== JSON.stringify(outcome, jsonable))
      .map(([ts, outcome]) => ({ ts, primary: byTs.get(ts), reference: outcome }));
    expect(JSON.parse(JSON.stringify(differing.slice(0, 5), jsonable))).toEqual([]);
    // Every path of the merge ran, or the test proved less than it claims.
    expect(stats.adopted).toBeGreaterThan(0);
    expect(stats.reexecuted).toBeGreaterThan(0);
    expect(stats.executed).toBeGreaterThan(0);
    expect(stats.applied).toBe(entries.length);
    if (churn) expect(Math.min(pool.joined, pool.retired, pool.crashed)).toBeGreaterThan(0);
    // The threads took part: transactions without a table were executed on them ahead of the merge.
    if (threads) expect(stats.speculated).toBeGreaterThan(0);
    // Delegation took part, its tables were merged, and its leases ended the ways asked.
    if (delegation) {
      expect(delegation.delegated).toBeGreaterThan(0);
      expect(delegation.adopted).toBeGreaterThan(0);
      for (const end of ends ?? []) expect(delegation.ended[end], `leases ended by ${end}`).toBeGreaterThan(0);
    }
  }

  it('equals sequential execution with slow, stale, silent and crashing pre-executors', async () => {
    await property(Number(process.env['REMORA_PIPELINE_TXS'] ?? 100_000), {});
  });

  // The multi-core merge (docs/primary.md): the same property with the transactions that have
  // no table executed on 2 and 4 threads ahead of the in-order merge.
  it.each([2, 4])('equals sequential execution with %i merge threads', async (threads) => {
    await property(Math.min(20_000, Number(process.env['REMORA_PIPELINE_TXS'] ?? 20_000)), { threads });
  });

  // Delegation when overwhelmed (docs/primary.md): a backlog threshold low enough that leases
  // are granted all the time; leases so short they expire mid-run; delegates crashing
  // mid-lease. The state and every outcome stay the sequential ones.
  const delegations: [string, Variant][] = [
    // Leases that never expire (and no silent member to hold one), ended by the batches of one
    // at the end if not before.
    [
      'constant leases',
      { delegation: { backlog: 16, leaseMs: 60_000, maxObjects: 8 }, behaviours: ['prompt', 'slow', 'stale', 'crashes'], serialTail: 3, ends: ['load'] },
    ],
    ['leases expiring', { delegation: { backlog: 16, leaseMs: 1, maxObjects: 8 }, ends: ['expired'] }],
    ['delegates crashing mid-lease', { delegation: { backlog: 16, leaseMs: 50, maxObjects: 8 }, crashDelegates: true, ends: ['member'] }],
  ];
  it.each(delegations)('equals sequential execution with delegation: %s', async (_, variant) => {
    await property(Math.min(10_000, Number(process.env['REMORA_PIPELINE_TXS'] ?? 10_000)), variant);
  });

  // Every policy with every state update, pre-executors joining, retiring and crashing
  // throughout; a smaller run each.
  const variants: { policy: Policy; hotToPrimary: boolean; stateUpdate: StateUpdate }[] = [];
  const policies: [Policy, boolean][] = [
    ['round-robin', false],
    ['load', false],
    ['load+affinity', false],
    ['load+affinity+hot', false],
    ['load+affinity+hot', true],
  ];
  for (const [policy, hotToPrimary] of policies) {
    for (const stateUpdate of ['broadcast', 'push', 'pull'] as const) variants.push({ policy, hotToPrimary, stateUpdate });
  }
  it.each(variants)('equals sequential execution with churn, $policy (hotToPrimary: $hotToPrimary), state update $stateUpdate', async (c) => {
    const total = Math.min(10_000, Number(process.env['REMORA_PIPELINE_TXS'] ?? 10_000));
    await property(total, { policy: c.policy, scheduling: { hotToPrimary: c.hotToPrimary }, stateUpdate: c.stateUpdate, churn: true });
  });
});
