import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useParams } from "react-router";
import { useCan } from "../../app/session";
import { AgentStatusBadge, BotStateBadge } from "../../components/Badges";
import { EmptyState, ErrorNote, Loading } from "../../components/Feedback";
import { ConfirmDialog } from "../../components/Modal";
import { api, unwrap } from "../../lib/api/client";
import { absoluteTime, bytes, percent, relativeTime } from "../../lib/format";
import { keys } from "../../lib/live";
import { useBotPages } from "../bots/api";
import { useRevokeAgent } from "./AgentsPage";
import { METRICS_REFRESH_MS, useDrainAgent } from "./api";

export default function AgentDetailPage() {
  const { id = "" } = useParams();
  const agent = useQuery({ queryKey: keys.agent(id), queryFn: () => unwrap(api.GET("/api/v1/agents/{id}", { params: { path: { id } } })), refetchInterval: METRICS_REFRESH_MS });
  const bots = useBotPages({ agent_id: id }, 200);
  const admin = useCan("admin");
  const [revoking, setRevoking] = useState(false);
  const revoke = useRevokeAgent();
  const [draining, setDraining] = useState(false);
  const drain = useDrainAgent();

  if (agent.isPending) return <Loading what="the agent" />;
  if (agent.isError) return <ErrorNote error={agent.error} prefix="The agent could not be loaded" />;
  const a = agent.data;
  const m = a.metrics;
  const list = bots.data?.pages.flatMap((p) => p.items) ?? [];
  return (
    <>
      <div className="page-head">
        <h1>{a.name}</h1>
        <AgentStatusBadge status={a.status} />
        <span className="spacer" />
        <Link className="btn" to={`/bots?agent=${a.id}`}>
          Its bots in the table
        </Link>
        {admin && a.status === "draining" ? (
          <button className="btn" disabled={drain.isPending} onClick={() => drain.mutate({ id: a.id, drain: false })}>
            Undrain
          </button>
        ) : null}
        {admin && a.status !== "revoked" && a.status !== "draining" ? (
          <button className="btn" onClick={() => setDraining(true)}>
            Drain
          </button>
        ) : null}
        {admin && a.status !== "revoked" ? (
          <button className="btn danger" onClick={() => setRevoking(true)}>
            Revoke
          </button>
        ) : null}
      </div>
      {a.status === "draining" ? (
        <p className="card muted" role="status">
          Draining: its bots were stopped and it takes no new starts{a.connected_replica ? "" : " (it is not connected)"}. Undrain
          it to start again the bots that should run.
        </p>
      ) : null}
      {!draining && drain.error ? <ErrorNote error={drain.error} /> : null}
      <div className="grid">
        <div className="card stat">
          <div className="value">{m ? `${m.cpu_percent.toFixed(0)} %` : "—"}</div>
          <div className="label">CPU</div>
        </div>
        <div className="card stat">
          <div className="value">{m ? percent(m.memory_used_bytes, m.memory_total_bytes) : "—"}</div>
          <div className="label">memory {m ? `(${bytes(m.memory_used_bytes)} of ${bytes(m.memory_total_bytes)})` : ""}</div>
        </div>
        <div className="card stat">
          <div className="value">{m ? percent(m.disk_used_bytes, m.disk_total_bytes) : "—"}</div>
          <div className="label">disk {m ? `(${bytes(m.disk_total_bytes)})` : ""}</div>
        </div>
        <div className="card stat">
          <div className="value">{m ? m.load1.toFixed(2) : "—"}</div>
          <div className="label">load (1 min)</div>
        </div>
        <div className="card stat">
          <div className="value">{m?.bots_running ?? "—"}</div>
          <div className="label">bots running</div>
        </div>
      </div>
      <section className="card" aria-labelledby="host-title">
        <h2 id="host-title">Host</h2>
        <dl className="facts">
          <dt>Hostname</dt>
          <dd>{a.hostname}</dd>
          <dt>System</dt>
          <dd>
            {a.os} / {a.arch}
          </dd>
          <dt>Agent version</dt>
          <dd>{a.version}</dd>
          <dt>Last seen</dt>
          <dd title={absoluteTime(a.last_seen_at)}>{relativeTime(a.last_seen_at)}</dd>
          <dt>Labels</dt>
          <dd>{Object.keys(a.labels).length ? Object.entries(a.labels).map(([k, v]) => <span className="chip" key={k}>{k}={v}</span>) : "—"}</dd>
          <dt>Paired</dt>
          <dd title={absoluteTime(a.created_at)}>{relativeTime(a.created_at)}</dd>
        </dl>
      </section>
      <section className="card" aria-labelledby="bots-title">
        <h2 id="bots-title">Bots</h2>
        {list.length ? (
          <ul className="plain">
            {list.map((b) => (
              <li key={b.id} className="row">
                <BotStateBadge state={b.state} /> <Link to={`/bots/${b.id}`}>{b.name}</Link>
              </li>
            ))}
          </ul>
        ) : bots.isPending ? null : (
          <EmptyState title="No bots on this agent">Create a bot and choose this agent.</EmptyState>
        )}
      </section>
      <ConfirmDialog
        open={draining}
        onOpenChange={setDraining}
        title={`Drain ${a.name}?`}
        body="Its running bots are stopped gracefully (their desired state is kept) and it takes no new starts until you undrain it."
        confirmLabel="Drain agent"
        busy={drain.isPending}
        error={<ErrorNote error={drain.error} />}
        onConfirm={() => drain.mutate({ id: a.id, drain: true }, { onSuccess: () => setDraining(false) })}
      />
      <ConfirmDialog
        open={revoking}
        onOpenChange={setRevoking}
        title={`Revoke ${a.name}?`}
        body="Its token stops working at once and its connection is closed; pairing again needs a new code."
        confirmLabel="Revoke agent"
        danger
        busy={revoke.isPending}
        error={<ErrorNote error={revoke.error} />}
        onConfirm={() => revoke.mutate(a.id, { onSuccess: () => setRevoking(false) })}
      />
    </>
  );
}
