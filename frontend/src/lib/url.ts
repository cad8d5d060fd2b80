// List filters and sort live in the URL (shareable, back/forward work). Parsing is strict:
// unknown values are dropped, so a hand-edited URL never sends the server a bad query.

export interface BotFilters {
  name?: string;
  state?: string;
  agent_id?: string;
  tag?: string;
  sort?: string;
  dir?: "asc" | "desc";
}

export const BOT_STATES = ["pending", "starting", "running", "stopping", "stopped", "exited", "crashed", "backoff", "failed", "unknown"] as const;
export const BOT_SORTS = ["name", "state", "agent", "restarts", "updated"] as const;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function botFiltersFromSearch(search: URLSearchParams): BotFilters {
  const filters: BotFilters = {};
  const name = search.get("q")?.trim();
  if (name) filters.name = name.slice(0, 200);
  const state = search.get("state");
  if (state && (BOT_STATES as readonly string[]).includes(state)) filters.state = state;
  const agent = search.get("agent");
  if (agent && UUID.test(agent)) filters.agent_id = agent;
  const tag = search.get("tag")?.trim();
  if (tag) filters.tag = tag.slice(0, 100);
  const sort = search.get("sort");
  if (sort && (BOT_SORTS as readonly string[]).includes(sort)) {
    filters.sort = sort;
    filters.dir = search.get("dir") === "desc" ? "desc" : "asc";
  }
  return filters;
}

export function botFiltersToSearch(filters: BotFilters): URLSearchParams {
  const search = new URLSearchParams();
  if (filters.name) search.set("q", filters.name);
  if (filters.state) search.set("state", filters.state);
  if (filters.agent_id) search.set("agent", filters.agent_id);
  if (filters.tag) search.set("tag", filters.tag);
  if (filters.sort) {
    search.set("sort", filters.sort);
    if (filters.dir === "desc") search.set("dir", "desc");
  }
  return search;
}

/** The part of the filters the server applies (sort is applied to the loaded rows). */
export function serverBotQuery(filters: BotFilters): { name?: string; state?: string; agent_id?: string; tag?: string } {
  const { name, state, agent_id, tag } = filters;
  return Object.fromEntries(Object.entries({ name, state, agent_id, tag }).filter(([, v]) => v !== undefined));
}

/** Plain string filters (commands, incidents, audit): only the allowed keys, only non-empty values. */
export function pickFilters<K extends string>(search: URLSearchParams, allowed: readonly K[]): Partial<Record<K, string>> {
  const out: Partial<Record<K, string>> = {};
  for (const key of allowed) {
    const value = search.get(key)?.trim();
    if (value) out[key] = value;
  }
  return out;
}
