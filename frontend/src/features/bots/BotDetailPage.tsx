import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { useCan } from "../../app/session";
import { BotStateBadge, CommandStatusBadge, SeverityBadge } from "../../components/Badges";
import { EmptyState, ErrorNote, Loading } from "../../components/Feedback";
import { ConfirmDialog } from "../../components/Modal";
import { api, unwrap } from "../../lib/api/client";
import { absoluteTime, exitDescription, relativeTime } from "../../lib/format";
import { keys } from "../../lib/live";
import { whyNot } from "../../lib/permissions";
import { useAgentNames } from "../agents/api";
import { useBot, useBotAction, type Action } from "./api";
import { LogViewer } from "./LogViewer";

export default function BotDetailPage() {
  const { id = "" } = useParams();
  const bot = useBot(id);
  const agentNames = useAgentNames();
  const canControl = useCan("control");
  const canEdit = useCan("edit");
  const action = useBotAction(id);
  const [deleting, setDeleting] = useState(false);
  const navigate = useNavigate();
  const qc = useQueryClient();
  const remove = useMutation({
    mutationFn: () => unwrap(api.DELETE("/api/v1/bots/{id}", { params: { path: { id } } })),
    onSuccess: () => {
      qc.removeQueries({ queryKey: keys.bot(id) });
      void qc.invalidateQueries({ queryKey: ["bots"] });
      navigate("/bots");
    },
  });
  const commands = useQuery({
    queryKey: keys.commands({ bot_id: id }),
    queryFn: () => unwrap(api.GET("/api/v1/commands", { params: { query: { bot_id: id, limit: 20 } } })),
  });
  const incidents = useQuery({
    queryKey: keys.incidents({ subject: `bot:${id}` }),
    queryFn: () => unwrap(api.GET("/api/v1/incidents", { params: { query: { subject: `bot:${id}`, limit: 20 } } })),
  });

  if (bot.isPending) return <Loading what="the bot" />;
  if (bot.isError) return <ErrorNote error={bot.error} prefix="The bot could not be loaded" />;
  const b = bot.data;
  const control = (a: Action) => (
    <button
      className={`btn ${a === "start" ? "primary" : a === "stop" ? "danger" : ""}`}
      disabled={!canControl || action.isPending}
      title={canControl ? undefined : whyNot("control")}
      onClick={() => action.mutate(a)}
    >
      {a.charAt(0).toUpperCase() + a.slice(1)}
    </button>
  );

  return (
    <>
      <div className="page-head">
        <h1>{b.name}</h1>
        <BotStateBadge state={b.state} />
        <span className="muted">wants {b.desired_state}</span>
        <span className="spacer" />
        {control("start")}
        {control("stop")}
        {control("restart")}
        {canEdit ? (
          <>
            <Link className="btn" to={`/bots/${id}/edit`}>
              Edit
            </Link>
            <button className="btn danger" onClick={() => setDeleting(true)}>
              Delete
            </button>
          </>
        ) : null}
      </div>
      {action.data ? (
        <div className="alert info" role="status">
          {action.data.message}
        </div>
      ) : null}
      <ErrorNote error={action.error} />
      <div className="grid-2">
        <section className="card" aria-labelledby="state-title">
          <h2 id="state-title">State</h2>
          <dl className="facts">
            <dt>State</dt>
            <dd data-bot-state={b.state}>{b.state}</dd>
            <dt>Agent</dt>
            <dd>
              <Link to={`/agents/${b.agent_id}`}>{agentNames.get(b.agent_id) ?? b.agent_id}</Link>
            </dd>
            <dt>PID</dt>
            <dd data-pid={b.pid ?? ""}>{b.pid ?? "—"}</dd>
            <dt>Started</dt>
            <dd title={absoluteTime(b.started_at)}>{b.started_at ? relativeTime(b.started_at) : "—"}</dd>
            <dt>Restarts</dt>
            <dd>{b.restart_count}</dd>
            <dt>Last exit</dt>
            <dd>{exitDescription(b.last_exit_code, b.last_exit_signal)}</dd>
            <dt>Last error</dt>
            <dd>{b.last_error ?? "—"}</dd>
            <dt>Tags</dt>
            <dd>{b.tags.length ? b.tags.map((t) => <span className="chip" key={t}>{t}</span>) : "—"}</dd>
            <dt>Updated</dt>
            <dd title={absoluteTime(b.updated_at)}>{relativeTime(b.updated_at)}</dd>
          </dl>
        </section>
        <section className="card" aria-labelledby="def-title">
          <h2 id="def-title">Definition</h2>
          <pre className="mono" style={{ margin: 0, whiteSpace: "pre-wrap", overflowWrap: "anywhere" }}>
            {JSON.stringify({ exec: b.exec, restart: b.restart, stop: b.stop }, null, 2)}
          </pre>
        </section>
      </div>
      <LogViewer botId={id} botName={b.name} />
      <div className="grid-2">
        <section className="card" aria-labelledby="cmd-title">
          <h2 id="cmd-title">Commands</h2>
          {commands.isError ? <ErrorNote error={commands.error} /> : null}
          {commands.data?.items.length ? (
            <ul className="plain">
              {commands.data.items.map((c) => (
                <li key={c.id} className="row">
                  <CommandStatusBadge status={c.status} /> <code>{c.kind}</code> <span className="muted">{relativeTime(c.created_at)}</span>
                  {c.error ? <span className="muted">— {c.error}</span> : null}
                </li>
              ))}
            </ul>
          ) : commands.isPending ? null : (
            <EmptyState title="No commands yet">Start the bot to send its first command.</EmptyState>
          )}
          <Link to={`/commands?bot_id=${id}`}>All commands of this bot</Link>
        </section>
        <section className="card" aria-labelledby="inc-title">
          <h2 id="inc-title">Incidents</h2>
          {incidents.data?.items.length ? (
            <ul className="plain">
              {incidents.data.items.map((i) => (
                <li key={i.id}>
                  <div className="row">
                    <SeverityBadge severity={i.severity} /> {i.message}
                  </div>
                  <span className="muted">
                    {relativeTime(i.opened_at)}
                    {i.count > 1 ? ` · ${i.count} times` : ""}
                    {i.resolved_at ? " · resolved" : " · open"}
                  </span>
                </li>
              ))}
            </ul>
          ) : incidents.isPending ? null : (
            <EmptyState title="No incidents">Crashes and restarts of this bot show up here.</EmptyState>
          )}
        </section>
      </div>
      <ConfirmDialog
        open={deleting}
        onOpenChange={setDeleting}
        title={`Delete ${b.name}?`}
        body="Its agent stops the process and forgets the bot; its logs and history go with it."
        confirmLabel="Delete bot"
        danger
        busy={remove.isPending}
        error={<ErrorNote error={remove.error} />}
        onConfirm={() => remove.mutate()}
      />
    </>
  );
}
