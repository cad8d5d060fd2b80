// The log viewer's memory: at most `cap` lines, the oldest dropped first, counting what was
// dropped so the viewer can say the view is truncated. Pure, unit-tested.

export interface LogLine {
  seq: number;
  stream: "stdout" | "stderr";
  time: string;
  text: string;
}

export interface LogBuffer {
  lines: LogLine[];
  dropped: number;
  lastSeq: number | null;
}

export const EMPTY_BUFFER: LogBuffer = { lines: [], dropped: 0, lastSeq: null };

/** Appends lines newer than the last one held (a reconnect may repeat some), keeping `cap`. */
export function append(buffer: LogBuffer, incoming: LogLine[], cap: number): LogBuffer {
  const fresh = buffer.lastSeq === null ? incoming : incoming.filter((l) => l.seq > (buffer.lastSeq as number));
  if (fresh.length === 0) return buffer;
  const all = buffer.lines.concat(fresh);
  const over = Math.max(0, all.length - cap);
  return {
    lines: over ? all.slice(over) : all,
    dropped: buffer.dropped + over,
    lastSeq: fresh[fresh.length - 1]?.seq ?? buffer.lastSeq,
  };
}

export function toText(lines: LogLine[]): string {
  return lines.map((l) => `${l.time} ${l.stream} ${l.text}`).join("\n") + "\n";
}
