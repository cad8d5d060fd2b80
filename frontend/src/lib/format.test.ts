import { describe, expect, it } from "vitest";
import { bytes, count, exitDescription, percent, relativeTime } from "./format";

const NOW = Date.parse("2026-01-01T12:00:00Z");

describe("formatting", () => {
  it("says how long ago, or how long until", () => {
    expect(relativeTime("2026-01-01T11:59:58Z", NOW)).toBe("just now");
    expect(relativeTime("2026-01-01T11:59:30Z", NOW)).toBe("30 s ago");
    expect(relativeTime("2026-01-01T11:48:00Z", NOW)).toBe("12 min ago");
    expect(relativeTime("2026-01-01T12:15:00Z", NOW)).toBe("in 15 min");
    expect(relativeTime("2025-12-30T12:00:00Z", NOW)).toBe("2 d ago");
    expect(relativeTime(null, NOW)).toBe("never");
  });

  it("sizes, shares and counts", () => {
    expect(bytes(512)).toBe("512 B");
    expect(bytes(1536)).toBe("1.5 KiB");
    expect(bytes(8 * 1024 ** 3)).toBe("8.0 GiB");
    expect(percent(1, 4)).toBe("25 %");
    expect(percent(1, 0)).toBe("—");
    expect(count(1, "bot")).toBe("1 bot");
    expect(count(10000, "bot")).toBe("10,000 bots");
  });

  it("describes an exit by signal first", () => {
    expect(exitDescription(1, null)).toBe("code 1");
    expect(exitDescription(null, 9)).toBe("signal 9");
    expect(exitDescription(null, null)).toBe("—");
  });
});
