import { useMutation, useQueryClient } from "@tanstack/react-query";
import { createColumnHelper, getCoreRowModel, useReactTable } from "@tanstack/react-table";
import { useMemo, useState } from "react";
import { Link } from "react-router";
import { useCan } from "../../app/session";
import { AgentStatusBadge } from "../../components/Badges";
import { DataTable } from "../../components/DataTable";
import { EmptyState, ErrorNote, Loading } from "../../components/Feedback";
import { ConfirmDialog } from "../../components/Modal";
import { api, unwrap } from "../../lib/api/client";
import type { components } from "../../lib/api/schema";
import { bytes, percent, relativeTime } from "../../lib/format";
import { keys } from "../../lib/live";
import { whyNot } from "../../lib/permissions";
import { useAgents } from "./api";
import { PairAgentDialog } from "./PairAgentDialog";

type Agent = components["schemas"]["Agent"];
const col = createColumnHelper<Agent>();

export function useRevokeAgent() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: (id: string) => unwrap(api.POST("/api/v1/agents/{id}/revoke", { params: { path: { id } } })),
    onSuccess: (agent) => {
      qc.setQueryData(keys.agent(agent.id), agent);
      void qc.invalidateQueries({ queryKey: keys.agents });
    },
  });
}

export default function AgentsPage() {
  const agents = useAgents();
  const admin = useCan("admin");
  const [pairing, setPairing] = useState(false);
  const [revoking, setRevoking] = useState<Agent | null>(null);
  const revoke = useRevokeAgent();

  const columns = useMemo(
    () => [
      col.accessor("name", { header: "Name", cell: (c) => <Link to={`/agents/${c.row.original.id}`}>{c.getValue()}</Link> }),
      col.accessor("status", { header: "Status", cell: (c) => <AgentStatusBadge status={c.getValue()} /> }),
      col.accessor("last_seen_at", { header: "Last seen", cell: (c) => relativeTime(c.getValue()) }),
      col.display({ id: "cpu", header: "CPU", cell: (c) => (c.row.original.metrics ? `${c.row.original.metrics.cpu_percent.toFixed(0)} %` : "—") }),
      col.display({
        id: "mem",
        header: "Memory",
        cell: (c) => {
          const m = c.row.original.metrics;
          return m ? `${bytes(m.memory_used_bytes)} (${percent(m.memory_used_bytes, m.memory_total_bytes)})` : "—";
        },
      }),
      col.display({ id: "disk", header: "Disk", cell: (c) => (c.row.original.metrics ? percent(c.row.original.metrics.disk_used_bytes, c.row.original.metrics.disk_total_bytes) : "—") }),
      col.display({ id: "bots", header: "Bots running", cell: (c) => c.row.original.metrics?.bots_running ?? "—" }),
      col.accessor("labels", {
        header: "Labels",
        cell: (c) =>
          Object.entries(c.getValue()).map(([k, v]) => (
            <span className="chip" key={k}>
              {k}={v}
            </span>
          )),
      }),
      col.display({ id: "os", header: "Host", cell: (c) => `${c.row.original.hostname} · ${c.row.original.os}/${c.row.original.arch}` }),
      col.display({
        id: "actions",
        header: () => <span className="visually-hidden">Actions</span>,
        cell: (c) =>
          admin && c.row.original.status !== "revoked" ? (
            <button className="btn small danger" onClick={() => setRevoking(c.row.original)}>
              Revoke
            </button>
          ) : null,
      }),
    ],
    [admin],
  );
  const table = useReactTable({ data: agents.data ?? [], columns, getCoreRowModel: getCoreRowModel(), getRowId: (a) => a.id });

  return (
    <>
      <div className="page-head">
        <h1>Agents</h1>
        <span className="spacer" />
        <button className="btn primary" disabled={!admin} title={admin ? undefined : whyNot("admin")} onClick={() => setPairing(true)}>
          Pair agent
        </button>
      </div>
      {agents.isPending ? (
        <Loading what="agents" />
      ) : agents.isError ? (
        <ErrorNote error={agents.error} prefix="Agents could not be loaded" />
      ) : (
        <DataTable
          table={table}
          label="Agents"
          tall={false}
          rowProps={(a) => ({ "data-agent": a.name })}
          empty={<EmptyState title="No agents yet">Pair one: click “Pair agent” and run the command it shows on the host.</EmptyState>}
        />
      )}
      <PairAgentDialog open={pairing} onOpenChange={setPairing} knownAgentIds={(agents.data ?? []).map((a) => a.id)} />
      <ConfirmDialog
        open={revoking !== null}
        onOpenChange={(open) => {
          if (!open) {
            setRevoking(null);
            revoke.reset();
          }
        }}
        title={`Revoke ${revoking?.name ?? ""}?`}
        body="Its token stops working at once and its connection is closed. Its bots keep running on the host until stopped there; pairing again needs a new code."
        confirmLabel="Revoke agent"
        danger
        busy={revoke.isPending}
        error={<ErrorNote error={revoke.error} />}
        onConfirm={() => revoking && revoke.mutate(revoking.id, { onSuccess: () => setRevoking(null) })}
      />
    </>
  );
}
