// Writes live events into the query cache — the only store of server state. Rows already in
// the cache are patched in place (a bot's state, an agent's presence, a command's status); what
// an event cannot patch exactly (counts, membership of a filtered list, a row not loaded yet) is
// refetched, at most once a second per family, so a burst costs one refetch.
import type { InfiniteData, QueryClient } from "@tanstack/react-query";
import type { components } from "./api/schema";
import { latestByKey } from "./coalesce";
import type { BotStatus, LiveEvent } from "./events";

type S = components["schemas"];
type Page<T> = { items: T[]; next_cursor?: string | null };

export const keys = {
  dashboard: ["dashboard"] as const,
  botsList: (filters: object) => ["bots", "list", filters] as const,
  botsCounts: (filters: object) => ["bots", "counts", filters] as const,
  bot: (id: string) => ["bots", "detail", id] as const,
  agents: ["agents", "list"] as const,
  agent: (id: string) => ["agents", "detail", id] as const,
  commands: (filters: object) => ["commands", "list", filters] as const,
  incidents: (filters: object) => ["incidents", "list", filters] as const,
};

/** Patches every cached page of every list under `prefix`; says whether any row matched. */
function patchPages<T extends { id: string }>(qc: QueryClient, prefix: readonly unknown[], id: string, patch: (row: T) => T | null): boolean {
  let found = false;
  for (const [key, data] of qc.getQueriesData<InfiniteData<Page<T>> | Page<T> | T[]>({ queryKey: prefix })) {
    if (!data) continue;
    const mapPage = (page: Page<T>): Page<T> => {
      if (!page.items.some((row) => row.id === id)) return page;
      found = true;
      const items: T[] = [];
      for (const row of page.items) {
        if (row.id !== id) items.push(row);
        else {
          const next = patch(row);
          if (next) items.push(next);
        }
      }
      return { ...page, items };
    };
    if (Array.isArray(data)) {
      if (data.some((row) => row.id === id)) {
        found = true;
        qc.setQueryData(key, data.map((row) => (row.id === id ? patch(row) : row)).filter((row): row is T => row !== null));
      }
    } else if ("pages" in data) {
      qc.setQueryData(key, { ...data, pages: data.pages.map(mapPage) });
    } else if ("items" in data) {
      qc.setQueryData(key, mapPage(data));
    }
  }
  return found;
}

export interface LiveCache {
  apply(batch: LiveEvent[]): void;
}

export function createLiveCache(qc: QueryClient, now: () => number = Date.now): LiveCache {
  const due = new Map<string, readonly unknown[]>();
  const lastRun = new Map<string, number>();
  let timer: ReturnType<typeof setTimeout> | undefined;

  const runDue = () => {
    timer = undefined;
    for (const [id, key] of due) {
      lastRun.set(id, now());
      void qc.invalidateQueries({ queryKey: key });
    }
    due.clear();
  };
  /** Refetch `key` soon: now if it has not run for a second, else when the second is up. */
  const refetchSoon = (key: readonly unknown[]) => {
    const id = JSON.stringify(key);
    due.set(id, key);
    if (timer) return;
    const wait = Math.max(0, 1_000 - (now() - (lastRun.get(id) ?? 0)));
    timer = setTimeout(runDue, wait);
  };

  const botState = (status: BotStatus) => {
    const merge = <T extends object>(row: T): T => ({ ...row, ...status });
    qc.setQueryData<S["Bot"]>(keys.bot(status.id), (bot) => (bot ? merge(bot) : bot));
    const found = patchPages<S["Bot"]>(qc, ["bots", "list"], status.id, merge);
    // A state filter's membership and the counts change with the state: refetch those.
    refetchSoon(["bots", "counts"]);
    for (const [key] of qc.getQueriesData({ queryKey: ["bots", "list"] })) {
      const filters = key[2] as { state?: string } | undefined;
      if (filters?.state || !found) refetchSoon(key);
    }
  };

  return {
    apply(batch) {
      const events = latestByKey(batch, (e) => {
        if (e.type === "bot_state") return `bot:${e.data.id}`;
        if (e.type === "command_status") return `cmd:${e.data.id}`;
        return null;
      });
      let dashboard = false;
      for (const event of events) {
        switch (event.type) {
          case "resync":
            void qc.invalidateQueries();
            return;
          case "bot_state":
            botState(event.data);
            dashboard = true;
            break;
          case "bot_removed":
            qc.removeQueries({ queryKey: keys.bot(event.data.bot_id) });
            patchPages<S["Bot"]>(qc, ["bots", "list"], event.data.bot_id, () => null);
            refetchSoon(["bots", "counts"]);
            dashboard = true;
            break;
          case "agent_presence": {
            const { agent_id, status } = event.data;
            qc.setQueryData<S["Agent"]>(keys.agent(agent_id), (a) => (a ? { ...a, status } : a));
            patchPages<S["Agent"]>(qc, keys.agents, agent_id, (a) => ({ ...a, status, last_seen_at: event.at }));
            // A new agent (just paired) is not in the list yet, and presence comes with fresh
            // metrics: refetch the agents (list and details).
            refetchSoon(["agents"]);
            dashboard = true;
            break;
          }
          case "command_status": {
            const c = event.data;
            const known = patchPages<S["Command"]>(qc, ["commands", "list"], c.id, (row) => ({
              ...row,
              status: c.status,
              attempt: c.attempt,
              error: c.error,
              finished_at: c.finished_at,
            }));
            if (!known) refetchSoon(["commands", "list"]);
            break;
          }
          case "incident": {
            const known = patchPages<S["Incident"]>(qc, ["incidents", "list"], event.data.id, () => event.data);
            if (!known) refetchSoon(["incidents", "list"]);
            dashboard = true;
            break;
          }
        }
      }
      if (dashboard) refetchSoon(keys.dashboard);
    },
  };
}
