// The one live connection of this tab: `GET /api/v1/events` read with fetch (EventSource cannot
// send Authorization) and parsed by eventsource-parser. It resumes with `Last-Event-ID`,
// reconnects with backoff, refreshes the session on 401, treats 45 s of silence (the server
// sends a keep-alive every 15 s) as a dead connection, and reports its health to the UI.
import type { components } from "./api/schema";
import { openSse, readSse } from "./sse";

type S = components["schemas"];
// The event payloads are not in the OpenAPI document (SSE); they are subsets of its types
// (contract/src/events.rs: `BotStatus` from `Bot`, `CommandSummary` from `Command`).
export type BotStatus = Pick<
  S["Bot"],
  "id" | "name" | "agent_id" | "desired_state" | "state" | "pid" | "started_at" | "last_exit_code" | "last_exit_signal" | "restart_count" | "last_error" | "version" | "updated_at"
>;
export type CommandSummary = Pick<S["Command"], "id" | "agent_id" | "bot_id" | "kind" | "status" | "attempt" | "error" | "created_at" | "finished_at">;
export type LiveEvent =
  | { type: "bot_state"; id: string; at: string; data: BotStatus }
  | { type: "bot_removed"; id: string; at: string; data: { bot_id: string } }
  | { type: "agent_presence"; id: string; at: string; data: { agent_id: string; name: string; status: S["AgentStatus"] } }
  | { type: "command_status"; id: string; at: string; data: CommandSummary }
  | { type: "incident"; id: string; at: string; data: S["Incident"] }
  | { type: "resync"; id: string; at: string; data: { reason: string } };

export type StreamHealth = "connecting" | "live" | "reconnecting" | "offline";

const SILENCE_MS = 45_000;

export interface EventStreamOptions {
  onEvent: (event: LiveEvent) => void;
  onHealth: (health: StreamHealth) => void;
}

/** Backoff before reconnect attempt `n` (0-based): 0.5 s doubling to 10 s, with jitter. */
export function backoffMs(n: number, random = Math.random): number {
  const base = Math.min(10_000, 500 * 2 ** n);
  return Math.round(base / 2 + (random() * base) / 2);
}

export function startEventStream({ onEvent, onHealth }: EventStreamOptions): () => void {
  let stopped = false;
  let lastEventId: string | undefined;
  let controller: AbortController | undefined;
  let failures = 0;
  let wake: (() => void) | undefined;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  // Coming back online or to the tab: retry at once instead of waiting out the backoff.
  const retryNow = () => wake?.();
  window.addEventListener("online", retryNow);
  document.addEventListener("visibilitychange", retryNow);

  const connectOnce = async () => {
    controller = new AbortController();
    const response = await openSse("/api/v1/events", controller.signal, lastEventId ? { "last-event-id": lastEventId } : {});
    failures = 0;
    onHealth("live");
    const abort = () => controller?.abort();
    await readSse(
      response,
      (message) => {
        if (message.id) lastEventId = message.id;
        const type = (message.event ?? "message") as LiveEvent["type"];
        try {
          const body = JSON.parse(message.data) as Record<string, unknown>;
          const data = type === "resync" ? body : body.data;
          onEvent({ type, id: message.id ?? "", at: String(body.at ?? ""), data } as LiveEvent);
        } catch {
          // A malformed event is skipped; the next resync covers anything it said.
        }
      },
      abort,
      SILENCE_MS,
    );
  };

  void (async () => {
    onHealth("connecting");
    while (!stopped) {
      try {
        await connectOnce();
      } catch {
        // fall through to the backoff
      }
      if (stopped) break;
      failures += 1;
      onHealth(failures > 3 || !navigator.onLine ? "offline" : "reconnecting");
      await sleep(backoffMs(failures - 1));
    }
  })();

  return () => {
    stopped = true;
    controller?.abort();
    wake?.();
    window.removeEventListener("online", retryNow);
    document.removeEventListener("visibilitychange", retryNow);
  };
}
