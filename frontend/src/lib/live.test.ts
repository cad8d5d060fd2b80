import { QueryClient, type InfiniteData } from "@tanstack/react-query";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { LiveEvent } from "./events";
import { createLiveCache, keys } from "./live";

type Row = { id: string; name: string; state: string; agent_id: string };
const page = (items: Row[]): InfiniteData<{ items: Row[]; next_cursor: null }> => ({ pages: [{ items, next_cursor: null }], pageParams: [null] });
const bot = (id: string, state: string): Row => ({ id, name: `bot-${id}`, state, agent_id: "a1" });
const botState = (id: string, state: string): LiveEvent =>
  ({ type: "bot_state", id: `e-${id}-${state}`, at: "", data: { ...bot(id, state), desired_state: "running", restart_count: 0, version: 2, updated_at: "" } }) as LiveEvent;

afterEach(() => vi.useRealTimers());

describe("live events into the query cache", () => {
  it("patches a bot's row in every cached list and its detail, with the newest state of a burst", () => {
    const qc = new QueryClient();
    qc.setQueryData(keys.botsList({ pageSize: 200 }), page([bot("1", "stopped"), bot("2", "stopped")]));
    qc.setQueryData(keys.bot("1"), bot("1", "stopped"));
    createLiveCache(qc).apply([botState("1", "starting"), botState("2", "starting"), botState("1", "running")]);
    const rows = qc.getQueryData<ReturnType<typeof page>>(keys.botsList({ pageSize: 200 }))!.pages[0]!.items;
    expect(rows.map((r) => r.state)).toEqual(["running", "starting"]);
    expect(qc.getQueryData<Row>(keys.bot("1"))!.state).toBe("running");
  });

  it("removes a deleted bot's row", () => {
    const qc = new QueryClient();
    qc.setQueryData(keys.botsList({}), page([bot("1", "stopped"), bot("2", "running")]));
    createLiveCache(qc).apply([{ type: "bot_removed", id: "e", at: "", data: { bot_id: "1" } }]);
    expect(qc.getQueryData<ReturnType<typeof page>>(keys.botsList({}))!.pages[0]!.items.map((r) => r.id)).toEqual(["2"]);
  });

  it("refetches counts and filtered lists once for a burst, not once per event", () => {
    vi.useFakeTimers();
    const qc = new QueryClient();
    const invalidate = vi.spyOn(qc, "invalidateQueries");
    qc.setQueryData(keys.botsList({ state: "running" }), page([bot("1", "running")]));
    const cache = createLiveCache(qc, () => Date.now());
    cache.apply(Array.from({ length: 500 }, (_, i) => botState(String(i % 50), i % 2 ? "running" : "stopped")));
    cache.apply([botState("1", "stopped")]);
    expect(invalidate).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1_000);
    const keysRefetched = invalidate.mock.calls.map(([filters]) => JSON.stringify(filters?.queryKey));
    expect(new Set(keysRefetched).size).toBe(keysRefetched.length);
    expect(keysRefetched).toContain(JSON.stringify(["bots", "counts"]));
    expect(keysRefetched).toContain(JSON.stringify(keys.botsList({ state: "running" })));
  });

  it("refetches everything on resync", () => {
    const qc = new QueryClient();
    const invalidate = vi.spyOn(qc, "invalidateQueries");
    createLiveCache(qc).apply([{ type: "resync", id: "", at: "", data: { reason: "missed" } }]);
    expect(invalidate).toHaveBeenCalledWith();
  });
});
