// The session: the access token lives in this module's memory only — never in localStorage,
// sessionStorage or a cookie readable by scripts. The refresh token is an HttpOnly cookie the
// server sets (path /api/v1/auth, SameSite=Strict); a reload or a new tab gets a fresh access
// token through POST /auth/refresh, and a timer refreshes it a minute before it expires.
import type { components } from "./api/schema";

export type User = components["schemas"]["User"];
type LoginResponse = components["schemas"]["LoginResponse"];

export interface Session {
  token: string;
  user: User;
  expiresAt: number;
}

let current: Session | null = null;
let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let inflight: Promise<Session | null> | null = null;
const listeners = new Set<() => void>();

export function getSession(): Session | null {
  return current;
}

export function subscribeSession(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function set(session: Session | null) {
  current = session;
  clearTimeout(refreshTimer);
  if (session) {
    // A minute early (or at half-life for short tokens), so no request meets an expired token.
    const lead = Math.min(60_000, (session.expiresAt - Date.now()) / 2);
    refreshTimer = setTimeout(() => void refresh(), Math.max(1_000, session.expiresAt - Date.now() - lead));
  }
  listeners.forEach((l) => l());
}

function accept(body: LoginResponse): Session {
  const session = { token: body.access_token, user: body.user, expiresAt: Date.now() + body.expires_in * 1000 };
  set(session);
  return session;
}

export class LoginError extends Error {}

export async function login(username: string, password: string): Promise<Session> {
  const response = await fetch("/api/v1/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
    credentials: "same-origin",
  });
  if (!response.ok) {
    const problem = (await response.json().catch(() => null)) as { detail?: string } | null;
    throw new LoginError(problem?.detail ?? `login failed (${response.status})`);
  }
  return accept((await response.json()) as LoginResponse);
}

/**
 * Exchanges the refresh cookie for a new access token. One at a time per tab (`inflight`) and,
 * where the browser has Web Locks, one at a time across tabs: the cookie rotates on every use and
 * the server ends a session whose old cookie is presented twice.
 */
export function refresh(): Promise<Session | null> {
  if (inflight) return inflight;
  const run = async () => {
    const response = await fetch("/api/v1/auth/refresh", { method: "POST", credentials: "same-origin" });
    if (!response.ok) {
      set(null);
      return null;
    }
    return accept((await response.json()) as LoginResponse);
  };
  const locked: Promise<Session | null> =
    typeof navigator !== "undefined" && navigator.locks
      ? // The DOM typings nest the callback's promise; at run time it is flattened.
        (navigator.locks.request("botmox-refresh", run) as unknown as Promise<Session | null>)
      : run();
  const pending = locked
    // Network down: keep the session we have; the next request or the stream retries.
    .catch(() => current)
    .finally(() => {
      inflight = null;
    });
  inflight = pending;
  return pending;
}

export async function logout(): Promise<void> {
  const token = current?.token;
  set(null);
  await fetch("/api/v1/auth/logout", {
    method: "POST",
    credentials: "same-origin",
    headers: token ? { authorization: `Bearer ${token}` } : {},
  }).catch(() => undefined);
}
