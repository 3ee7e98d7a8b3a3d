// Full (mark-compact) collections of this process, as V8 reports them. A run in which the
// collector marks again right after every full collection costs the node microseconds a
// transaction more (docs/pipeline.md, "No full collections back to back"), so each measured
// window records how many it saw.
import { constants, PerformanceObserver } from 'node:perf_hooks';

let full = 0;
let observer: PerformanceObserver | null = null;

/** Full collections counted since the first call (entries arrive a moment after each one). */
export function fullCollections(): number {
  if (observer === null) {
    observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        // A gc entry's `detail` ({ kind, flags }) is not on the base entry type.
        const { detail } = e as { detail?: { kind?: number } | null };
        if (detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) full++;
      }
    });
    observer.observe({ entryTypes: ['gc'] });
  }
  return full;
}
