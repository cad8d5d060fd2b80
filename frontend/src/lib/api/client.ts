// The typed API client (openapi-fetch over the generated `schema.d.ts`). Every request carries
// the in-memory access token; a 401 refreshes the session once and retries.
import createClient from "openapi-fetch";
import type { paths } from "./schema";
import { getSession, refresh } from "../session";

export interface Problem {
  status: number;
  code: string;
  title?: string;
  detail: string;
  hint?: string;
  field?: string;
}

/** An API error, as the server's problem+json says it. */
export class ApiError extends Error {
  readonly problem: Problem;
  constructor(problem: Problem) {
    super(problem.detail);
    this.problem = problem;
  }
}

export async function authFetch(input: Request): Promise<Response> {
  const attempt = (token: string | undefined) => {
    const request = input.clone();
    if (token) request.headers.set("authorization", `Bearer ${token}`);
    return fetch(request);
  };
  const response = await attempt(getSession()?.token);
  if (response.status !== 401 || input.url.includes("/api/v1/auth/")) return response;
  const renewed = await refresh();
  return renewed ? attempt(renewed.token) : response;
}

export const api = createClient<paths>({ baseUrl: "", fetch: authFetch, credentials: "same-origin" });

/** Awaits an openapi-fetch call: its data, or an `ApiError` with the problem. */
export async function unwrap<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (response.ok) return data as T;
  const body = (error ?? {}) as Partial<Problem>;
  throw new ApiError({
    status: response.status,
    code: body.code ?? `http_${response.status}`,
    detail: body.detail ?? response.statusText ?? "request failed",
    hint: body.hint,
    field: body.field,
  });
}

/** What to tell a person about an error: what went wrong and, when the server says, what to try. */
export function describeError(error: unknown): { message: string; hint?: string } {
  if (error instanceof ApiError) {
    const { detail, hint, status } = error.problem;
    if (status === 403) return { message: detail, hint: hint ?? "your role does not allow this; ask an admin" };
    return { message: detail, hint };
  }
  if (error instanceof TypeError) return { message: "The server could not be reached.", hint: "check that botmox is running, then try again" };
  return { message: error instanceof Error ? error.message : String(error) };
}
