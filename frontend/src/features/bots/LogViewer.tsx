// A bot's live log: one follow stream (the page's only one), follow-to-bottom only while the
// reader is at the bottom (scrolling up never gets yanked back), pause/resume, a stdout/stderr
// filter, a cap with a "truncated" note, and a download of what is held.
import { useEffect, useLayoutEffect, useRef, useState } from "react";
import { openSse, readSse } from "../../lib/sse";
import { append, EMPTY_BUFFER, toText, type LogBuffer, type LogLine } from "./logBuffer";

const CAP = 5_000;
const SILENCE_MS = 45_000;

export function LogViewer({ botId, botName }: { botId: string; botName: string }) {
  const [buffer, setBuffer] = useState<LogBuffer>(EMPTY_BUFFER);
  const [paused, setPaused] = useState(false);
  const [held, setHeld] = useState<LogLine[]>([]);
  const [stream, setStream] = useState<"all" | "stdout" | "stderr">("all");
  const [status, setStatus] = useState<"connecting" | "following" | "reconnecting">("connecting");
  const pausedRef = useRef(paused);
  pausedRef.current = paused;
  const lastSeq = useRef<number | null>(null);
  lastSeq.current = buffer.lastSeq;
  const box = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);

  useEffect(() => {
    let stopped = false;
    let controller: AbortController | undefined;
    let pending: LogLine[] = [];
    let frame = 0;
    const flush = () => {
      frame = 0;
      const batch = pending;
      pending = [];
      if (pausedRef.current) setHeld((h) => h.concat(batch).slice(-CAP));
      else setBuffer((b) => append(b, batch, CAP));
    };
    void (async () => {
      let failures = 0;
      while (!stopped) {
        controller = new AbortController();
        try {
          const after = lastSeq.current;
          const query = after === null ? "follow=true&limit=1000" : `follow=true&after_seq=${after}`;
          const response = await openSse(`/api/v1/bots/${botId}/logs?${query}`, controller.signal);
          failures = 0;
          setStatus("following");
          await readSse(
            response,
            (message) => {
              if (message.event !== "log") return;
              try {
                pending.push(JSON.parse(message.data) as LogLine);
              } catch {
                return;
              }
              if (!frame) frame = requestAnimationFrame(flush);
            },
            () => controller?.abort(),
            SILENCE_MS,
          );
        } catch {
          // reconnect below
        }
        if (stopped) break;
        setStatus("reconnecting");
        failures += 1;
        await new Promise((r) => setTimeout(r, Math.min(10_000, 500 * 2 ** failures)));
      }
    })();
    return () => {
      stopped = true;
      controller?.abort();
      if (frame) cancelAnimationFrame(frame);
    };
  }, [botId]);

  useLayoutEffect(() => {
    const el = box.current;
    if (el && atBottom.current) el.scrollTop = el.scrollHeight;
  }, [buffer, stream]);

  const shown = stream === "all" ? buffer.lines : buffer.lines.filter((l) => l.stream === stream);
  const download = () => {
    const url = URL.createObjectURL(new Blob([toText(shown)], { type: "text/plain" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = `${botName}.log`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1_000);
  };

  return (
    <section className="card" aria-labelledby="logs-title">
      <div className="page-head">
        <h2 id="logs-title">Log</h2>
        <span className="muted" role="status" data-log-status={status}>
          {paused ? `paused${held.length ? `, ${held.length} new lines held` : ""}` : status}
        </span>
        <span className="spacer" />
        <div className="toolbar">
          <select aria-label="Which output" value={stream} onChange={(e) => setStream(e.target.value as typeof stream)}>
            <option value="all">stdout + stderr</option>
            <option value="stdout">stdout</option>
            <option value="stderr">stderr</option>
          </select>
          <button
            className="btn small"
            aria-pressed={paused}
            onClick={() => {
              if (paused) {
                setBuffer((b) => append(b, held, CAP));
                setHeld([]);
              }
              setPaused(!paused);
            }}
          >
            {paused ? "Resume" : "Pause"}
          </button>
          <button className="btn small" onClick={download} disabled={shown.length === 0}>
            Download
          </button>
        </div>
      </div>
      {buffer.dropped > 0 ? (
        <p className="muted" data-truncated>
          Truncated: showing the last {CAP.toLocaleString("en")} lines ({buffer.dropped.toLocaleString("en")} older lines dropped from view; download or the API has more).
        </p>
      ) : null}
      <div
        className="log"
        ref={box}
        tabIndex={0}
        role="log"
        aria-label={`Log of ${botName}`}
        onScroll={(e) => {
          const el = e.currentTarget;
          atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
        }}
      >
        {shown.length === 0 ? <div className="muted">No log lines yet. Lines appear here as the bot writes them.</div> : null}
        {shown.map((l) => (
          <div key={l.seq} className={`line ${l.stream}`} data-seq={l.seq}>
            <span className="ts">{l.time.slice(11, 23)}</span>
            {l.text}
          </div>
        ))}
      </div>
    </section>
  );
}
