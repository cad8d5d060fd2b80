// The bot form's pure logic: a definition ↔ the form's text fields, and which form field a
// server problem's `field` (e.g. `exec.env.MODE`, `tags[2]`) belongs to. Unit-tested.
import type { components } from "../../lib/api/schema";

type S = components["schemas"];

export interface BotFormValues {
  name: string;
  agent_id: string;
  program: string;
  args: string;
  cwd: string;
  env: string;
  secret_env: string;
  policy: S["RestartPolicy"];
  max_restarts: string;
  window_seconds: string;
  backoff_initial_ms: string;
  backoff_max_ms: string;
  stable_after_seconds: string;
  stop_timeout_seconds: string;
  tags: string;
  start_now: boolean;
}

export type FormField = keyof BotFormValues;

export const EMPTY_FORM: BotFormValues = {
  name: "",
  agent_id: "",
  program: "",
  args: "",
  cwd: "",
  env: "",
  secret_env: "",
  policy: "on-failure",
  max_restarts: "5",
  window_seconds: "300",
  backoff_initial_ms: "1000",
  backoff_max_ms: "60000",
  stable_after_seconds: "60",
  stop_timeout_seconds: "10",
  tags: "",
  start_now: false,
};

const lines = (text: string) =>
  text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);

/** `KEY=value` lines → a map; a line without `=` becomes a key with an empty value (the server names it). */
export function parsePairs(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of lines(text)) {
    const i = line.indexOf("=");
    if (i < 0) out[line] = "";
    else out[line.slice(0, i).trim()] = line.slice(i + 1);
  }
  return out;
}

export function formatPairs(map: Record<string, string> | undefined): string {
  return Object.entries(map ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join("\n");
}

const int = (text: string) => (text.trim() === "" ? Number.NaN : Number(text.trim()));

export type LocalErrors = Partial<Record<FormField, string>>;

/** What can be said before asking the server (numbers are numbers); the server checks the rest. */
export function localErrors(v: BotFormValues): LocalErrors {
  const errors: LocalErrors = {};
  const numeric: FormField[] = ["max_restarts", "window_seconds", "backoff_initial_ms", "backoff_max_ms", "stable_after_seconds", "stop_timeout_seconds"];
  for (const f of numeric) {
    const n = int(v[f] as string);
    if (!Number.isInteger(n) || n < 0) errors[f] = "must be a whole number, 0 or more";
  }
  if (!v.agent_id) errors.agent_id = "choose the agent that runs this bot";
  return errors;
}

export function toSpec(v: BotFormValues): S["BotSpec"] {
  return {
    name: v.name.trim(),
    agent_id: v.agent_id,
    exec: {
      program: v.program.trim(),
      args: lines(v.args),
      cwd: v.cwd.trim() || undefined,
      env: parsePairs(v.env),
      secret_env: parsePairs(v.secret_env),
    },
    restart: {
      policy: v.policy,
      max_restarts: int(v.max_restarts),
      window_seconds: int(v.window_seconds),
      backoff_initial_ms: int(v.backoff_initial_ms),
      backoff_max_ms: int(v.backoff_max_ms),
      stable_after_seconds: int(v.stable_after_seconds),
    },
    stop: { timeout_seconds: int(v.stop_timeout_seconds) },
    desired_state: v.start_now ? "running" : "stopped",
    tags: v.tags
      .split(/[,\s]+/)
      .map((t) => t.trim())
      .filter(Boolean),
  };
}

export function fromBot(bot: S["Bot"]): BotFormValues {
  return {
    name: bot.name,
    agent_id: bot.agent_id,
    program: bot.exec.program,
    args: bot.exec.args?.join("\n") ?? "",
    cwd: bot.exec.cwd ?? "",
    env: formatPairs(bot.exec.env),
    secret_env: formatPairs(bot.exec.secret_env),
    policy: bot.restart.policy,
    max_restarts: String(bot.restart.max_restarts),
    window_seconds: String(bot.restart.window_seconds),
    backoff_initial_ms: String(bot.restart.backoff_initial_ms),
    backoff_max_ms: String(bot.restart.backoff_max_ms),
    stable_after_seconds: String(bot.restart.stable_after_seconds),
    stop_timeout_seconds: String(bot.stop.timeout_seconds),
    tags: bot.tags.join(", "),
    start_now: bot.desired_state === "running",
  };
}

/** The form field a problem's `field` points at, or null when it names none of them. */
export function formFieldOf(problemField: string | undefined): FormField | null {
  if (!problemField) return null;
  const direct: Record<string, FormField> = {
    name: "name",
    agent_id: "agent_id",
    "exec.program": "program",
    "exec.cwd": "cwd",
    "stop.timeout_seconds": "stop_timeout_seconds",
    "restart.policy": "policy",
  };
  if (direct[problemField]) return direct[problemField];
  if (problemField.startsWith("exec.args")) return "args";
  if (problemField.startsWith("exec.secret_env")) return "secret_env";
  if (problemField.startsWith("exec.env")) return "env";
  if (problemField.startsWith("tags")) return "tags";
  const restart = /^restart\.(\w+)$/.exec(problemField)?.[1];
  if (restart && restart in EMPTY_FORM) return restart as FormField;
  return null;
}
