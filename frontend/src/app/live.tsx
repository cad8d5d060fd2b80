// Starts the tab's one event stream while signed in, feeds it through the per-frame coalescer
// into the query cache, and offers its health and a listener hook to components.
import { useQueryClient } from "@tanstack/react-query";
import { createContext, useContext, useEffect, useRef, useState, type ReactNode } from "react";
import { createCoalescer, frameScheduler } from "../lib/coalesce";
import { startEventStream, type LiveEvent, type StreamHealth } from "../lib/events";
import { createLiveCache } from "../lib/live";

type Listener = (event: LiveEvent) => void;
interface Live {
  health: StreamHealth;
  /** How many times the stream has (re)connected: a test waits for it to grow after an outage. */
  connects: number;
  listen: (listener: Listener) => () => void;
}

const LiveContext = createContext<Live>({ health: "connecting", connects: 0, listen: () => () => undefined });

export function LiveProvider({ children }: { children: ReactNode }) {
  const qc = useQueryClient();
  const [health, setHealth] = useState<StreamHealth>("connecting");
  const [connects, setConnects] = useState(0);
  const listeners = useRef(new Set<Listener>());
  const [live] = useState(() => ({
    listen(listener: Listener) {
      listeners.current.add(listener);
      return () => {
        listeners.current.delete(listener);
      };
    },
  }));

  useEffect(() => {
    const cache = createLiveCache(qc);
    const coalescer = createCoalescer<LiveEvent>(frameScheduler, (batch) => {
      cache.apply(batch);
      for (const event of batch) listeners.current.forEach((l) => l(event));
    });
    let wasLive = false;
    const stop = startEventStream({
      onEvent: (event) => coalescer.push(event),
      onHealth: (next) => {
        // Back after an outage whose events the server may no longer have: refetch what is shown.
        if (next === "live" && wasLive) void qc.invalidateQueries();
        if (next === "live") {
          wasLive = true;
          setConnects((n) => n + 1);
        }
        setHealth(next);
      },
    });
    return stop;
  }, [qc]);

  return <LiveContext.Provider value={{ health, connects, listen: live.listen }}>{children}</LiveContext.Provider>;
}

export function useLive(): Live {
  return useContext(LiveContext);
}

/** Calls `listener` with every live event while the component is mounted. */
export function useLiveEvents(listener: Listener): void {
  const { listen } = useLive();
  const ref = useRef(listener);
  ref.current = listener;
  useEffect(() => listen((e) => ref.current(e)), [listen]);
}

const HEALTH_TEXT: Record<StreamHealth, string> = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline — retrying",
};

export function StreamHealthIndicator() {
  const { health, connects } = useLive();
  return (
    <span className={`health ${health}`} role="status" aria-live="polite" data-stream={health} data-stream-connects={connects} title="Live updates from the server">
      <span className="dot" aria-hidden="true" />
      {HEALTH_TEXT[health]}
    </span>
  );
}
