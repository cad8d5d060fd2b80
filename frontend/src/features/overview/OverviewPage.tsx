import { useQuery } from "@tanstack/react-query";
import { Link } from "react-router";
import { HealthBadge, SeverityBadge } from "../../components/Badges";
import { EmptyState, ErrorNote, Loading } from "../../components/Feedback";
import { api, unwrap } from "../../lib/api/client";
import { relativeTime } from "../../lib/format";
import { keys } from "../../lib/live";

const ONBOARDING_LINKS: Record<string, [string, string]> = {
  pair_agent: ["/agents", "Pair an agent"],
  create_bot: ["/bots/new", "Create a bot"],
  start_bot: ["/bots", "Start a bot"],
};

export default function OverviewPage() {
  const dashboard = useQuery({ queryKey: keys.dashboard, queryFn: () => unwrap(api.GET("/api/v1/dashboard")) });
  if (dashboard.isPending) return <Loading what="the overview" />;
  if (dashboard.isError) return <ErrorNote error={dashboard.error} prefix="The overview could not be loaded" />;
  const { status, recommendations, recent_incidents, onboarding } = dashboard.data;
  const c = status.counts;
  const running = c.bots_by_state.running ?? 0;
  const troubled = (c.bots_by_state.crashed ?? 0) + (c.bots_by_state.failed ?? 0) + (c.bots_by_state.backoff ?? 0);
  const queued = (c.queue_by_status.queued ?? 0) + (c.queue_by_status.dispatched ?? 0) + (c.queue_by_status.running ?? 0);
  const openIncidents = Object.values(c.open_incidents_by_severity).reduce((a, b) => a + (b ?? 0), 0);

  return (
    <>
      <div className="page-head">
        <h1>Overview</h1>
        <HealthBadge health={status.health} />
      </div>
      {!onboarding.complete ? (
        <section className="card" aria-labelledby="onboarding">
          <h2 id="onboarding">Get started</h2>
          <ol className="plain">
            {onboarding.steps.map((step) => {
              const link = ONBOARDING_LINKS[step.id];
              return (
                <li key={step.id} className="row" data-step={step.id} data-done={step.done}>
                  <span className={`badge ${step.done ? "ok" : ""}`}>{step.done ? "done" : "to do"}</span>
                  <strong>{step.title}</strong>
                  {!step.done && link ? <Link to={link[0]}>{link[1]}</Link> : null}
                </li>
              );
            })}
          </ol>
        </section>
      ) : null}
      <section className="grid" aria-label="Fleet at a glance">
        <Stat label="agents online" value={`${c.agents_by_status.online ?? 0} / ${c.agents_total}`} to="/agents" />
        <Stat label="bots running" value={`${running} / ${c.bots_total}`} to="/bots?state=running" />
        <Stat label="bots in trouble" value={troubled} to="/bots?state=crashed" />
        <Stat label="commands in flight" value={queued} to="/commands" />
        <Stat label="open incidents" value={openIncidents} to="/incidents" />
      </section>
      <div className="grid-2">
        <section className="card" aria-labelledby="health">
          <h2 id="health">
            Health: <HealthBadge health={status.health} />
          </h2>
          {status.reasons.length ? (
            <ul>
              {status.reasons.map((r) => (
                <li key={r}>{r}</li>
              ))}
            </ul>
          ) : (
            <p className="muted">Nothing needs attention.</p>
          )}
          <h3>Recommendations</h3>
          {recommendations.length ? (
            <ul className="plain">
              {recommendations.map((r) => (
                <li key={r.title + r.detail}>
                  <div className="row">
                    <SeverityBadge severity={r.severity} /> <strong>{r.title}</strong>
                  </div>
                  <div className="muted">{r.detail}</div>
                  {r.panel ? <Link to={r.panel}>Go there</Link> : null}
                </li>
              ))}
            </ul>
          ) : (
            <p className="muted">No recommendations right now.</p>
          )}
        </section>
        <section className="card" aria-labelledby="recent">
          <h2 id="recent">Recent incidents</h2>
          {recent_incidents.length ? (
            <ul className="plain">
              {recent_incidents.map((i) => (
                <li key={i.id}>
                  <div className="row">
                    <SeverityBadge severity={i.severity} />
                    <span>{i.message}</span>
                  </div>
                  <span className="muted">
                    {i.kind.replaceAll("_", " ")} · {relativeTime(i.opened_at)}
                    {i.resolved_at ? " · resolved" : ""}
                  </span>
                </li>
              ))}
            </ul>
          ) : (
            <EmptyState title="No incidents">The supervisor opens one when a bot crashes or an agent goes offline.</EmptyState>
          )}
          <Link to="/incidents">All incidents</Link>
        </section>
      </div>
    </>
  );
}

function Stat({ label, value, to }: { label: string; value: number | string; to: string }) {
  return (
    <Link to={to} className="card stat" style={{ textDecoration: "none", color: "inherit" }}>
      <div className="value">{value}</div>
      <div className="label">{label}</div>
    </Link>
  );
}
