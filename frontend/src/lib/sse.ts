// Reading a Server-Sent Events response body with fetch (so requests can carry Authorization,
// which EventSource cannot). Shared by the event stream and the log follower.
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { getSession, refresh } from "./session";

/** Opens `url` as an event stream with the session's token; one refresh-and-retry on 401. */
export async function openSse(url: string, signal: AbortSignal, extraHeaders: Record<string, string> = {}): Promise<Response> {
  const attempt = () => {
    const headers: Record<string, string> = { accept: "text/event-stream", ...extraHeaders };
    const token = getSession()?.token;
    if (token) headers.authorization = `Bearer ${token}`;
    return fetch(url, { headers, signal, cache: "no-store" });
  };
  let response = await attempt();
  if (response.status === 401 && (await refresh())) response = await attempt();
  if (!response.ok || !response.body) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

/**
 * Feeds the body's events to `onMessage` until it ends; aborts through `abort` when nothing (not
 * even a keep-alive comment) arrived for `silenceMs`.
 */
export async function readSse(response: Response, onMessage: (message: EventSourceMessage) => void, abort: () => void, silenceMs: number): Promise<void> {
  if (!response.body) return;
  const parser = createParser({ onEvent: onMessage });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let silence = setTimeout(abort, silenceMs);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      clearTimeout(silence);
      silence = setTimeout(abort, silenceMs);
      parser.feed(value);
    }
  } finally {
    clearTimeout(silence);
  }
}
