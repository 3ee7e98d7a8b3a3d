// Imported first by the CLI, so it runs before anything allocates. V8 pretenures an allocation
// site (allocates its objects straight in the old generation) once most of them survive a
// scavenge. A node's per-transaction objects live a few milliseconds, across a scavenge or
// two, and die: pretenured, they die in the old generation, where only a full collection
// (marking, sweeping) frees them. Measured in the node with its pre-executors, all results
// adopted (docs/pipeline.md, "Where the node's time goes"): 18.1–21.7 µs of CPU a transaction
// with pretenuring off, 22.3–28.8 with it on, the collector's helper threads 2.8–4.6 against
// 5.3–6.6. Set at run time, as a flag on the command line cannot be given through `npx`, the
// bin link or `npm run`; those figures were measured with it set this way.
import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--no-allocation-site-pretenuring');
