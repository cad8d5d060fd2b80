import { useInfiniteQuery } from "@tanstack/react-query";
import { createColumnHelper, getCoreRowModel, useReactTable } from "@tanstack/react-table";
import { useMemo } from "react";
import { DataTable } from "../../components/DataTable";
import { EmptyState, ErrorNote, Loading } from "../../components/Feedback";
import { api, unwrap } from "../../lib/api/client";
import type { components } from "../../lib/api/schema";
import { absoluteTime, relativeTime, shortId } from "../../lib/format";
import { usePagedRows, useUrlParam } from "../../lib/hooks";
import { pickFilters } from "../../lib/url";

type Entry = components["schemas"]["AuditEntry"];
type ActorKind = components["schemas"]["ActorKind"];
type Outcome = components["schemas"]["Outcome"];
const col = createColumnHelper<Entry>();

export default function AuditPage() {
  const [search, set] = useUrlParam();
  const filters = useMemo(() => pickFilters(search, ["actor_kind", "action", "outcome"] as const), [search]);
  const pages = useInfiniteQuery({
    queryKey: ["audit", filters],
    queryFn: ({ pageParam }) =>
      unwrap(
        api.GET("/api/v1/audit", {
          params: {
            query: {
              actor_kind: filters.actor_kind as ActorKind | undefined,
              action: filters.action,
              outcome: filters.outcome as Outcome | undefined,
              limit: 100,
              cursor: pageParam ?? undefined,
            },
          },
        }),
      ),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => last.next_cursor ?? null,
    // The audit log is not on the event stream: refresh it when the page is opened.
    staleTime: 0,
  });
  const { rows, more } = usePagedRows(pages);
  const columns = useMemo(
    () => [
      col.accessor("at", { header: "When", cell: (c) => <span title={absoluteTime(c.getValue())}>{relativeTime(c.getValue())}</span> }),
      col.accessor("actor", { header: "Actor", cell: (c) => `${c.getValue().kind.replace("_", " ")}${c.getValue().id ? ` ${shortId(c.getValue().id as string)}` : ""}` }),
      col.accessor("action", { header: "Action", cell: (c) => <code>{c.getValue()}</code> }),
      col.accessor("target", { header: "Target", cell: (c) => c.getValue() ?? "" }),
      col.accessor("outcome", { header: "Outcome", cell: (c) => <span className={`badge ${c.getValue() === "success" ? "ok" : "bad"}`}>{c.getValue()}</span> }),
      col.accessor("source_ip", { header: "From", cell: (c) => c.getValue() ?? "" }),
    ],
    [],
  );
  const table = useReactTable({ data: rows, columns, getCoreRowModel: getCoreRowModel(), getRowId: (e) => e.id });
  return (
    <>
      <div className="page-head">
        <h1>Audit log</h1>
        <span className="spacer" />
        <button className="btn small" onClick={() => void pages.refetch()}>
          Load newest
        </button>
      </div>
      <div className="toolbar" role="search">
        <select aria-label="Filter by actor" value={filters.actor_kind ?? ""} onChange={(e) => set("actor_kind", e.target.value)}>
          <option value="">All actors</option>
          {["user", "api_token", "agent", "supervisor", "system"].map((k) => (
            <option key={k} value={k}>
              {k.replace("_", " ")}
            </option>
          ))}
        </select>
        <input data-search aria-label="Filter by action" placeholder="Action, e.g. bot.start  ( / )" defaultValue={filters.action ?? ""} onKeyDown={(e) => e.key === "Enter" && set("action", e.currentTarget.value.trim())} />
        <select aria-label="Filter by outcome" value={filters.outcome ?? ""} onChange={(e) => set("outcome", e.target.value)}>
          <option value="">Any outcome</option>
          <option value="success">success</option>
          <option value="failure">failure</option>
        </select>
      </div>
      {pages.isPending ? (
        <Loading what="the audit log" />
      ) : pages.isError ? (
        <ErrorNote error={pages.error} prefix="The audit log could not be loaded" />
      ) : (
        <DataTable table={table} label="Audit log" onEndReached={more} empty={<EmptyState title="Nothing recorded for these filters" />} />
      )}
    </>
  );
}
