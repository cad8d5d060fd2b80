import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useMemo } from "react";
import { api, unwrap } from "../../lib/api/client";
import { keys } from "../../lib/live";

/** How often agent metrics are refetched: they travel in heartbeats, which are not events. */
export const METRICS_REFRESH_MS = 15_000;

export function useAgents() {
  return useQuery({ queryKey: keys.agents, queryFn: () => unwrap(api.GET("/api/v1/agents")), refetchInterval: METRICS_REFRESH_MS });
}

/** Agent names by id, for tables that show a bot's or command's agent. */
export function useAgentNames(): Map<string, string> {
  const { data } = useAgents();
  // Stable between renders: tables memoise their columns on it.
  return useMemo(() => new Map((data ?? []).map((a) => [a.id, a.name])), [data]);
}

/** Drain (`drain: true`: stop its bots, refuse new starts) or undrain an agent. */
export function useDrainAgent() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: ({ id, drain }: { id: string; drain: boolean }) =>
      unwrap(
        drain
          ? api.POST("/api/v1/agents/{id}/drain", { params: { path: { id } } })
          : api.POST("/api/v1/agents/{id}/undrain", { params: { path: { id } } }),
      ),
    onSuccess: ({ agent }) => {
      qc.setQueryData(keys.agent(agent.id), agent);
      void qc.invalidateQueries({ queryKey: keys.agents });
    },
  });
}
