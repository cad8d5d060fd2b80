import { describe, expect, it } from "vitest";
import { EMPTY_FORM, formFieldOf, localErrors, parsePairs, toSpec } from "./form";
import { append, EMPTY_BUFFER, type LogLine } from "./logBuffer";

describe("bot form", () => {
  it("maps the server's problem fields onto form fields", () => {
    expect(formFieldOf("name")).toBe("name");
    expect(formFieldOf("exec.program")).toBe("program");
    expect(formFieldOf("exec.args[3]")).toBe("args");
    expect(formFieldOf("exec.env.MODE")).toBe("env");
    expect(formFieldOf("exec.secret_env.PASSWORD")).toBe("secret_env");
    expect(formFieldOf("restart.backoff_max_ms")).toBe("backoff_max_ms");
    expect(formFieldOf("tags[1]")).toBe("tags");
    expect(formFieldOf("something.else")).toBeNull();
    expect(formFieldOf(undefined)).toBeNull();
  });

  it("turns the text fields into a definition", () => {
    const spec = toSpec({ ...EMPTY_FORM, name: " farmer-1 ", agent_id: "a", program: "python3", args: "bot.py\n\n--realm eu", env: "MODE=farm\nX=a=b", tags: "eu, farm  x", start_now: true });
    expect(spec.name).toBe("farmer-1");
    expect(spec.exec.args).toEqual(["bot.py", "--realm eu"]);
    expect(spec.exec.env).toEqual({ MODE: "farm", X: "a=b" });
    expect(spec.tags).toEqual(["eu", "farm", "x"]);
    expect(spec.desired_state).toBe("running");
    expect(spec.restart?.max_restarts).toBe(5);
  });

  it("catches non-numbers and a missing agent before asking the server", () => {
    expect(localErrors({ ...EMPTY_FORM, max_restarts: "five" })).toEqual({ max_restarts: "must be a whole number, 0 or more", agent_id: "choose the agent that runs this bot" });
    expect(parsePairs("NOVALUE")).toEqual({ NOVALUE: "" });
  });
});

describe("log buffer", () => {
  const line = (seq: number): LogLine => ({ seq, stream: "stdout", time: "2026-01-01T00:00:00Z", text: `line ${seq}` });

  it("keeps the newest lines up to the cap and counts the dropped", () => {
    let b = append(EMPTY_BUFFER, [1, 2, 3].map(line), 4);
    b = append(b, [4, 5, 6].map(line), 4);
    expect(b.lines.map((l) => l.seq)).toEqual([3, 4, 5, 6]);
    expect(b.dropped).toBe(2);
  });

  it("ignores lines a reconnect repeats", () => {
    const b = append(append(EMPTY_BUFFER, [1, 2].map(line), 10), [2, 3].map(line), 10);
    expect(b.lines.map((l) => l.seq)).toEqual([1, 2, 3]);
  });
});
