// Bursts of events become one cache update per animation frame: a restart of 1,000 bots is
// thousands of events, and the table should re-render once per frame, not once per event.

export interface Coalescer<T> {
  push(item: T): void;
  /** Applies what is queued now (tests, and before the tab unloads). */
  flush(): void;
  pending(): number;
}

/**
 * `schedule` runs its callback later (requestAnimationFrame in the browser; a timer when the tab
 * is hidden, where frames stop). Items keep their order; `flush` gets all queued since the last.
 */
export function createCoalescer<T>(schedule: (run: () => void) => void, apply: (batch: T[]) => void): Coalescer<T> {
  let queue: T[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (queue.length === 0) return;
    const batch = queue;
    queue = [];
    apply(batch);
  };
  return {
    push(item) {
      queue.push(item);
      if (!scheduled) {
        scheduled = true;
        schedule(flush);
      }
    },
    flush,
    pending: () => queue.length,
  };
}

/** The browser's scheduler: next frame while visible, a 250 ms timer while hidden. */
export function frameScheduler(run: () => void): void {
  if (typeof document !== "undefined" && document.visibilityState === "hidden") setTimeout(run, 250);
  else requestAnimationFrame(() => run());
}

/**
 * Keeps only the newest of several updates to the same thing within a batch (e.g. a bot's
 * starting → running in one frame), keeping the order of each key's last appearance.
 */
export function latestByKey<T>(batch: T[], key: (item: T) => string | null): T[] {
  const last = new Map<string, number>();
  batch.forEach((item, i) => {
    const k = key(item);
    if (k !== null) last.set(k, i);
  });
  return batch.filter((item, i) => {
    const k = key(item);
    return k === null || last.get(k) === i;
  });
}
