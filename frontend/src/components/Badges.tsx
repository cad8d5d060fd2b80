// Status as people see it: a word and a colour (never colour alone).
const BOT_TONE: Record<string, string> = {
  running: "ok",
  starting: "info",
  stopping: "info",
  backoff: "warn",
  crashed: "bad",
  failed: "bad",
  unknown: "warn",
};

export function BotStateBadge({ state }: { state: string }) {
  return (
    <span className={`badge ${BOT_TONE[state] ?? ""}`} data-state={state}>
      <span className="dot" aria-hidden="true" />
      {state}
    </span>
  );
}

const AGENT_TONE: Record<string, string> = { online: "ok", offline: "bad", draining: "warn", revoked: "", pending: "info" };

export function AgentStatusBadge({ status }: { status: string }) {
  return (
    <span className={`badge ${AGENT_TONE[status] ?? ""}`} data-status={status}>
      <span className="dot" aria-hidden="true" />
      {status}
    </span>
  );
}

const SEVERITY_TONE: Record<string, string> = { info: "info", warning: "warn", critical: "bad" };

export function SeverityBadge({ severity }: { severity: string }) {
  return <span className={`badge ${SEVERITY_TONE[severity] ?? ""}`}>{severity}</span>;
}

const COMMAND_TONE: Record<string, string> = {
  succeeded: "ok",
  failed: "bad",
  dead_lettered: "bad",
  timed_out: "bad",
  expired: "warn",
  cancelled: "",
  queued: "info",
  dispatched: "info",
  running: "info",
};

export function CommandStatusBadge({ status }: { status: string }) {
  return <span className={`badge ${COMMAND_TONE[status] ?? ""}`}>{status.replace("_", " ")}</span>;
}

const HEALTH_TONE: Record<string, string> = { healthy: "ok", degraded: "warn", critical: "bad" };

export function HealthBadge({ health }: { health: string }) {
  return <span className={`badge ${HEALTH_TONE[health] ?? ""}`}>{health}</span>;
}
