// Formatting for people: relative times, sizes, percentages. Pure, so unit-tested.

const UNITS: [Intl.RelativeTimeFormatUnit, number][] = [
  ["day", 86_400],
  ["hour", 3_600],
  ["minute", 60],
  ["second", 1],
];

/** "12 s ago", "3 min ago", "in 14 min"; "never" for a missing time. */
export function relativeTime(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return "never";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "—";
  const seconds = Math.round((t - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 5) return "just now";
  for (const [unit, size] of UNITS) {
    if (abs >= size || unit === "second") {
      const n = Math.floor(abs / size);
      const short = { day: "d", hour: "h", minute: "min", second: "s" }[unit as "day"];
      return seconds < 0 ? `${n} ${short} ago` : `in ${n} ${short}`;
    }
  }
  return "—";
}

export function absoluteTime(iso: string | null | undefined): string {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

/** 1536 → "1.5 KiB". */
export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i += 1;
  }
  return `${i === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${units[i]}`;
}

export function percent(used: number, total: number): string {
  if (!total) return "—";
  return `${Math.round((used / total) * 100)} %`;
}

export function count(n: number, one: string, many = `${one}s`): string {
  return `${n.toLocaleString("en")} ${n === 1 ? one : many}`;
}

/** The exit as a person reads it: "code 1", "signal 9", "—". */
export function exitDescription(code: number | null | undefined, signal: number | null | undefined): string {
  if (signal !== null && signal !== undefined) return `signal ${signal}`;
  if (code !== null && code !== undefined) return `code ${code}`;
  return "—";
}

export function shortId(id: string): string {
  return id.slice(-8);
}
