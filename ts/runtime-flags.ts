// Imported first by the CLI, so it runs before anything allocates. Two settings of V8's
// collector, both measured in the node with its pre-executors, all results adopted
// (docs/pipeline.md, "Where the node's time goes"). Set at run time, as a flag on the command
// line cannot be given through `npx`, the bin link or `npm run`; the figures were measured
// with them set this way or given to `node` directly.
//
// No allocation-site pretenuring. V8 pretenures an allocation site (allocates its objects
// straight in the old generation) once most of them survive a scavenge. A node's
// per-transaction objects live a few milliseconds, across a scavenge or two, and die:
// pretenured, they die in the old generation, where only a full collection (marking,
// sweeping) frees them. 18.1–21.7 µs of CPU a transaction with pretenuring off, 22.3–28.8 with
// it on, the collector's helper threads 2.8–4.6 against 5.3–6.6.
//
// The old generation grows to four times what a full collection left before the next one.
// The node's JavaScript heap is small (about 25 MB live; the state is in the native store) and
// barely grows, so V8's own heuristic picks a growth factor near its minimum, which leaves less
// room below the limit than the young generation's size; V8 then starts incremental marking
// again right after every full collection. Most runs of the node measured 5–25 full
// collections without this (some 2), every run 2 with it, both at start-up; a measured window
// such a storm fell in cost 1–4 µs a transaction more on the collector's helper threads.
import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--no-allocation-site-pretenuring');
setFlagsFromString('--heap-growing-percent=300');
