import { useQuery } from "@tanstack/react-query";
import { api, unwrap } from "../../lib/api/client";
import { keys } from "../../lib/live";

export function useAgents() {
  return useQuery({ queryKey: keys.agents, queryFn: () => unwrap(api.GET("/api/v1/agents")) });
}

/** Agent names by id, for tables that show a bot's or command's agent. */
export function useAgentNames(): Map<string, string> {
  const agents = useAgents();
  return new Map((agents.data ?? []).map((a) => [a.id, a.name]));
}
