import { describe, expect, it } from "vitest";
import { createCoalescer, latestByKey } from "./coalesce";

describe("createCoalescer", () => {
  it("applies a burst once, in order, on the next scheduled run", () => {
    const runs: (() => void)[] = [];
    const applied: number[][] = [];
    const c = createCoalescer<number>((run) => runs.push(run), (batch) => applied.push(batch));
    for (let i = 0; i < 1000; i++) c.push(i);
    expect(runs).toHaveLength(1);
    expect(applied).toHaveLength(0);
    runs[0]!();
    expect(applied).toHaveLength(1);
    expect(applied[0]).toHaveLength(1000);
    expect(applied[0]![999]).toBe(999);
  });

  it("schedules again after a flush, and an empty flush applies nothing", () => {
    const runs: (() => void)[] = [];
    const applied: string[][] = [];
    const c = createCoalescer<string>((run) => runs.push(run), (batch) => applied.push(batch));
    c.push("a");
    runs[0]!();
    c.push("b");
    expect(runs).toHaveLength(2);
    c.flush();
    runs[1]!();
    expect(applied).toEqual([["a"], ["b"]]);
    expect(c.pending()).toBe(0);
  });
});

describe("latestByKey", () => {
  it("keeps each key's last update and everything without a key", () => {
    const batch = [
      { k: "bot:1", s: "starting" },
      { k: null, s: "incident" },
      { k: "bot:2", s: "stopping" },
      { k: "bot:1", s: "running" },
    ];
    expect(latestByKey(batch, (e) => e.k).map((e) => e.s)).toEqual(["incident", "stopping", "running"]);
  });
});
