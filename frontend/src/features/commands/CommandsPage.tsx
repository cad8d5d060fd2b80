import { useInfiniteQuery, useMutation } from "@tanstack/react-query";
import { createColumnHelper, getCoreRowModel, useReactTable } from "@tanstack/react-table";
import { useMemo } from "react";
import { Link } from "react-router";
import { useCan } from "../../app/session";
import { CommandStatusBadge } from "../../components/Badges";
import { DataTable } from "../../components/DataTable";
import { EmptyState, ErrorNote, Loading } from "../../components/Feedback";
import { api, unwrap } from "../../lib/api/client";
import type { components } from "../../lib/api/schema";
import { relativeTime, shortId } from "../../lib/format";
import { keys } from "../../lib/live";
import { usePagedRows, useUrlParam } from "../../lib/hooks";
import { pickFilters } from "../../lib/url";
import { useAgentNames } from "../agents/api";

type Command = components["schemas"]["Command"];
type Status = components["schemas"]["CommandStatus"];
const STATUSES: Status[] = ["queued", "dispatched", "running", "succeeded", "failed", "cancelled", "expired", "timed_out", "dead_lettered"];
const FINISHED = new Set<Status>(["succeeded", "failed", "cancelled", "expired", "timed_out", "dead_lettered"]);
const col = createColumnHelper<Command>();

export default function CommandsPage() {
  const [search, set] = useUrlParam();
  const filters = useMemo(() => pickFilters(search, ["status", "agent_id", "bot_id"] as const), [search]);
  const agentNames = useAgentNames();
  const canCancel = useCan("cancel");
  const pages = useInfiniteQuery({
    queryKey: keys.commands(filters),
    queryFn: ({ pageParam }) =>
      unwrap(api.GET("/api/v1/commands", { params: { query: { ...(filters as { status?: Status }), limit: 100, cursor: pageParam ?? undefined } } })),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => last.next_cursor ?? null,
  });
  const cancel = useMutation({ mutationFn: (id: string) => unwrap(api.POST("/api/v1/commands/{id}/cancel", { params: { path: { id } } })) });
  const { rows, more } = usePagedRows(pages);
  const columns = useMemo(
    () => [
      col.accessor("kind", { header: "Kind", cell: (c) => <code>{c.getValue()}</code> }),
      col.accessor("status", { header: "Status", cell: (c) => <CommandStatusBadge status={c.getValue()} /> }),
      col.accessor("bot_id", { header: "Bot", cell: (c) => (c.getValue() ? <Link to={`/bots/${c.getValue()}`}>{shortId(c.getValue() as string)}</Link> : "—") }),
      col.accessor("agent_id", { header: "Agent", cell: (c) => <Link to={`/agents/${c.getValue()}`}>{agentNames.get(c.getValue()) ?? shortId(c.getValue())}</Link> }),
      col.accessor("created_by", { header: "By", cell: (c) => c.getValue().kind.replace("_", " ") }),
      col.accessor("attempt", { header: "Attempt" }),
      col.accessor("created_at", { header: "Created", cell: (c) => relativeTime(c.getValue()) }),
      col.accessor("error", { header: "Error", cell: (c) => c.getValue() ?? "" }),
      col.display({
        id: "cancel",
        header: () => <span className="visually-hidden">Actions</span>,
        cell: (c) =>
          canCancel && !FINISHED.has(c.row.original.status) ? (
            <button className="btn small" disabled={cancel.isPending} onClick={() => cancel.mutate(c.row.original.id)}>
              Cancel
            </button>
          ) : null,
      }),
    ],
    [agentNames, canCancel, cancel],
  );
  const table = useReactTable({ data: rows, columns, getCoreRowModel: getCoreRowModel(), getRowId: (c) => c.id });

  return (
    <>
      <div className="page-head">
        <h1>Commands</h1>
      </div>
      <div className="toolbar" role="search">
        <select aria-label="Filter by status" value={filters.status ?? ""} onChange={(e) => set("status", e.target.value)}>
          <option value="">All statuses</option>
          {STATUSES.map((s) => (
            <option key={s}>{s}</option>
          ))}
        </select>
        <select aria-label="Filter by agent" value={filters.agent_id ?? ""} onChange={(e) => set("agent_id", e.target.value)}>
          <option value="">All agents</option>
          {[...agentNames].map(([id, name]) => (
            <option key={id} value={id}>
              {name}
            </option>
          ))}
        </select>
        {filters.bot_id ? (
          <button className="btn small" onClick={() => set("bot_id", "")}>
            Bot {shortId(filters.bot_id)} ✕
          </button>
        ) : null}
      </div>
      <ErrorNote error={cancel.error} prefix="Not cancelled" />
      {pages.isPending ? (
        <Loading what="commands" />
      ) : pages.isError ? (
        <ErrorNote error={pages.error} prefix="Commands could not be loaded" />
      ) : (
        <DataTable
          table={table}
          label="Commands"
          onEndReached={more}
          empty={<EmptyState title="No commands">Starting, stopping or changing a bot queues commands for its agent; they show up here.</EmptyState>}
        />
      )}
    </>
  );
}
