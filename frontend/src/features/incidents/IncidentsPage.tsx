import { useInfiniteQuery, useMutation, useQueryClient } from "@tanstack/react-query";
import { createColumnHelper, getCoreRowModel, useReactTable } from "@tanstack/react-table";
import { useMemo } from "react";
import { useCan } from "../../app/session";
import { SeverityBadge } from "../../components/Badges";
import { DataTable } from "../../components/DataTable";
import { EmptyState, ErrorNote, Loading } from "../../components/Feedback";
import { api, unwrap } from "../../lib/api/client";
import type { components } from "../../lib/api/schema";
import { absoluteTime, relativeTime } from "../../lib/format";
import { keys } from "../../lib/live";
import { usePagedRows, useUrlParam } from "../../lib/hooks";
import { pickFilters } from "../../lib/url";

type Incident = components["schemas"]["Incident"];
type Kind = components["schemas"]["IncidentKind"];
type Severity = components["schemas"]["Severity"];
const KINDS: Kind[] = ["bot_crashed", "bot_restarted", "bot_crash_loop", "bot_failed", "agent_offline", "agent_online", "command_expired", "command_dead_lettered", "token_revoked_agent_connected"];
const col = createColumnHelper<Incident>();

export default function IncidentsPage() {
  const [search, set] = useUrlParam();
  const filters = useMemo(() => pickFilters(search, ["open", "kind", "severity"] as const), [search]);
  const canAck = useCan("ack");
  const qc = useQueryClient();
  const query = { open: filters.open === undefined ? undefined : filters.open === "true", kind: filters.kind as Kind | undefined, severity: filters.severity as Severity | undefined };
  const pages = useInfiniteQuery({
    queryKey: keys.incidents(filters),
    queryFn: ({ pageParam }) => unwrap(api.GET("/api/v1/incidents", { params: { query: { ...query, limit: 100, cursor: pageParam ?? undefined } } })),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => last.next_cursor ?? null,
  });
  const ack = useMutation({
    mutationFn: (id: string) => unwrap(api.POST("/api/v1/incidents/{id}/ack", { params: { path: { id } } })),
    onSuccess: () => void qc.invalidateQueries({ queryKey: ["incidents"] }),
  });
  const { rows, more } = usePagedRows(pages);
  const columns = useMemo(
    () => [
      col.accessor("severity", { header: "Severity", cell: (c) => <SeverityBadge severity={c.getValue()} /> }),
      col.accessor("kind", { header: "Kind", cell: (c) => c.getValue().replaceAll("_", " ") }),
      col.accessor("message", { header: "What happened" }),
      col.accessor("count", { header: "Times" }),
      col.accessor("opened_at", { header: "Opened", cell: (c) => <span title={absoluteTime(c.getValue())}>{relativeTime(c.getValue())}</span> }),
      col.accessor("resolved_at", { header: "Resolved", cell: (c) => (c.getValue() ? relativeTime(c.getValue()) : <span className="badge warn">open</span>) }),
      col.display({
        id: "ack",
        header: "Acknowledged",
        cell: (c) =>
          c.row.original.acknowledged_at ? (
            relativeTime(c.row.original.acknowledged_at)
          ) : canAck ? (
            <button className="btn small" disabled={ack.isPending} onClick={() => ack.mutate(c.row.original.id)}>
              Acknowledge
            </button>
          ) : (
            "no"
          ),
      }),
    ],
    [ack, canAck],
  );
  const table = useReactTable({ data: rows, columns, getCoreRowModel: getCoreRowModel(), getRowId: (i) => i.id });

  return (
    <>
      <div className="page-head">
        <h1>Incidents</h1>
      </div>
      <div className="toolbar" role="search">
        <select aria-label="Open or resolved" value={filters.open ?? ""} onChange={(e) => set("open", e.target.value)}>
          <option value="">Open and resolved</option>
          <option value="true">Open only</option>
          <option value="false">Resolved only</option>
        </select>
        <select aria-label="Filter by kind" value={filters.kind ?? ""} onChange={(e) => set("kind", e.target.value)}>
          <option value="">All kinds</option>
          {KINDS.map((k) => (
            <option key={k} value={k}>
              {k.replaceAll("_", " ")}
            </option>
          ))}
        </select>
        <select aria-label="Filter by severity" value={filters.severity ?? ""} onChange={(e) => set("severity", e.target.value)}>
          <option value="">All severities</option>
          <option>info</option>
          <option>warning</option>
          <option>critical</option>
        </select>
      </div>
      <ErrorNote error={ack.error} prefix="Not acknowledged" />
      {pages.isPending ? (
        <Loading what="incidents" />
      ) : pages.isError ? (
        <ErrorNote error={pages.error} prefix="Incidents could not be loaded" />
      ) : (
        <DataTable
          table={table}
          label="Incidents"
          onEndReached={more}
          rowProps={(i) => ({ "data-incident": i.kind })}
          empty={<EmptyState title="No incidents">The supervisor opens one when a bot crashes, loops or an agent goes offline.</EmptyState>}
        />
      )}
    </>
  );
}
