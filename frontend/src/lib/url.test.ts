import { describe, expect, it } from "vitest";
import { botFiltersFromSearch, botFiltersToSearch, pickFilters, serverBotQuery } from "./url";

const AGENT = "0190b2a4-1c2d-7e3f-8a9b-0c1d2e3f4a5b";

describe("bot filters in the URL", () => {
  it("round-trips every filter and the sort", () => {
    const filters = { name: "farmer", state: "running", agent_id: AGENT, tag: "eu", sort: "restarts", dir: "desc" as const };
    const search = botFiltersToSearch(filters);
    expect(search.toString()).toBe(`q=farmer&state=running&agent=${AGENT}&tag=eu&sort=restarts&dir=desc`);
    expect(botFiltersFromSearch(search)).toEqual(filters);
  });

  it("drops values the server would refuse", () => {
    const parsed = botFiltersFromSearch(new URLSearchParams("state=sleeping&agent=not-a-uuid&sort=colour&q=%20%20"));
    expect(parsed).toEqual({});
  });

  it("sends the server only its filters, never the sort", () => {
    expect(serverBotQuery({ name: "x", sort: "name", dir: "asc" })).toEqual({ name: "x" });
  });

  it("picks only allowed, non-empty plain filters", () => {
    expect(pickFilters(new URLSearchParams("status=queued&bot_id=&evil=1"), ["status", "bot_id"] as const)).toEqual({ status: "queued" });
  });
});
