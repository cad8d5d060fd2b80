import { describe, expect, it } from "vitest";
import { loadSettings, saveSettings } from "./settings";

function memory() {
  const map = new Map<string, string>();
  return { getItem: (k: string) => map.get(k) ?? null, setItem: (k: string, v: string) => void map.set(k, v), map };
}

describe("table settings", () => {
  it("remembers columns and page size, nothing else", () => {
    const storage = memory();
    saveSettings("bots", { hidden: ["pid"], pageSize: 500, token: "secret" } as never, storage);
    expect(storage.map.get("botmox.table.bots")).toBe('{"hidden":["pid"],"pageSize":500}');
    expect(loadSettings("bots", storage)).toEqual({ hidden: ["pid"], pageSize: 500 });
  });

  it("falls back to defaults on junk", () => {
    const storage = memory();
    storage.setItem("botmox.table.bots", '{"pageSize":7,"hidden":"x"}');
    expect(loadSettings("bots", storage)).toEqual({ hidden: [], pageSize: 200 });
    storage.setItem("botmox.table.bots", "not json");
    expect(loadSettings("bots", storage)).toEqual({ hidden: [], pageSize: 200 });
  });
});
