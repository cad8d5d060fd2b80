import { useInfiniteQuery, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, unwrap } from "../../lib/api/client";
import type { components } from "../../lib/api/schema";
import { keys } from "../../lib/live";

type S = components["schemas"];
export type Bot = S["Bot"];
export type BotQuery = { name?: string; state?: string; agent_id?: string; tag?: string };

export function useBotPages(query: BotQuery, pageSize: number) {
  return useInfiniteQuery({
    queryKey: keys.botsList({ ...query, pageSize }),
    queryFn: ({ pageParam }) =>
      unwrap(
        api.GET("/api/v1/bots", {
          params: { query: { ...(query as { state?: S["BotState"] }), limit: pageSize, cursor: pageParam ?? undefined } },
        }),
      ),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => last.next_cursor ?? null,
  });
}

/** Counts by state and the total of a filter (one row fetched): refetched when states change. */
export function useBotCounts(query: BotQuery) {
  return useQuery({
    queryKey: keys.botsCounts(query),
    queryFn: async () => {
      const page = await unwrap(api.GET("/api/v1/bots", { params: { query: { ...(query as { state?: S["BotState"] }), limit: 1 } } }));
      return { counts: page.counts, total: page.total };
    },
  });
}

export function useBot(id: string) {
  return useQuery({ queryKey: keys.bot(id), enabled: id !== "", queryFn: () => unwrap(api.GET("/api/v1/bots/{id}", { params: { path: { id } } })) });
}

export type Action = "start" | "stop" | "restart";

/** Start/stop/restart one bot; the state shown changes when the server reports it, not before. */
export function useBotAction(id: string) {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: (action: Action) => {
      const params = { params: { path: { id } } };
      if (action === "start") return unwrap(api.POST("/api/v1/bots/{id}/start", params));
      if (action === "stop") return unwrap(api.POST("/api/v1/bots/{id}/stop", params));
      return unwrap(api.POST("/api/v1/bots/{id}/restart", params));
    },
    onSuccess: () => void qc.invalidateQueries({ queryKey: ["commands", "list", { bot_id: id }] }),
  });
}

export function useBulkAction() {
  return useMutation({
    mutationFn: (body: S["BulkAction"]) => unwrap(api.POST("/api/v1/bots/actions", { body })),
  });
}
