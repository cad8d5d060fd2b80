import {
  createColumnHelper,
  getCoreRowModel,
  getSortedRowModel,
  useReactTable,
  type RowSelectionState,
  type SortingState,
  type VisibilityState,
} from "@tanstack/react-table";
import { useEffect, useMemo, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { useCan } from "../../app/session";
import { BotStateBadge } from "../../components/Badges";
import { DataTable } from "../../components/DataTable";
import { EmptyState, ErrorNote, Loading } from "../../components/Feedback";
import { ConfirmDialog } from "../../components/Modal";
import { count, exitDescription, relativeTime } from "../../lib/format";
import { usePagedRows } from "../../lib/hooks";
import { whyNot } from "../../lib/permissions";
import { loadSettings, PAGE_SIZES, saveSettings } from "../../lib/settings";
import { BOT_STATES, botFiltersFromSearch, botFiltersToSearch, serverBotQuery, type BotFilters } from "../../lib/url";
import { useAgentNames } from "../agents/api";
import { useBotCounts, useBotPages, useBulkAction, type Action, type Bot } from "./api";

const col = createColumnHelper<Bot>();
const HIDEABLE: [string, string][] = [
  ["agent", "Agent"],
  ["pid", "PID"],
  ["restarts", "Restarts"],
  ["exit", "Last exit"],
  ["tags", "Tags"],
  ["updated", "Updated"],
];

export default function BotsPage() {
  const [search, setSearch] = useSearchParams();
  const filters = useMemo(() => botFiltersFromSearch(search), [search]);
  const query = useMemo(() => serverBotQuery(filters), [filters]);
  const [settings, setSettings] = useState(() => loadSettings("bots"));
  useEffect(() => saveSettings("bots", settings), [settings]);

  const pages = useBotPages(query, settings.pageSize);
  const counts = useBotCounts(query);
  const agentNames = useAgentNames();
  const canControl = useCan("control");
  const canEdit = useCan("edit");
  const { rows, more: loadMore } = usePagedRows(pages);

  const setFilters = (next: BotFilters) => setSearch(botFiltersToSearch(next), { replace: true });
  const [nameInput, setNameInput] = useState(filters.name ?? "");
  useEffect(() => setNameInput(filters.name ?? ""), [filters.name]);
  useEffect(() => {
    // Typing filters on the server after a short pause, not on every key.
    const timer = setTimeout(() => {
      if ((filters.name ?? "") !== nameInput.trim()) setFilters({ ...filters, name: nameInput.trim() || undefined });
    }, 250);
    return () => clearTimeout(timer);
    // eslint-style exhaustive deps would refire on every filter change; only typing matters here.
  }, [nameInput]); // eslint-disable-line

  const [selection, setSelection] = useState<RowSelectionState>({});
  useEffect(() => setSelection({}), [query]);
  const sorting: SortingState = useMemo(() => (filters.sort ? [{ id: filters.sort, desc: filters.dir === "desc" }] : []), [filters.sort, filters.dir]);
  const visibility: VisibilityState = useMemo(() => Object.fromEntries(settings.hidden.map((h) => [h, false])), [settings.hidden]);

  const columns = useMemo(
    () => [
      col.display({
        id: "select",
        header: ({ table }) => (
          <input type="checkbox" aria-label="Select all loaded bots" checked={table.getIsAllRowsSelected()} onChange={table.getToggleAllRowsSelectedHandler()} />
        ),
        cell: ({ row }) => (
          <input type="checkbox" aria-label={`Select ${row.original.name}`} checked={row.getIsSelected()} onChange={row.getToggleSelectedHandler()} />
        ),
      }),
      col.accessor("name", { id: "name", header: "Name", cell: (c) => <Link to={`/bots/${c.row.original.id}`}>{c.getValue()}</Link> }),
      col.accessor("state", { id: "state", header: "State", cell: (c) => <BotStateBadge state={c.getValue()} /> }),
      col.accessor((b) => agentNames.get(b.agent_id) ?? b.agent_id.slice(-8), { id: "agent", header: "Agent" }),
      col.accessor("pid", { id: "pid", header: "PID", enableSorting: false, cell: (c) => c.getValue() ?? "—" }),
      col.accessor("restart_count", { id: "restarts", header: "Restarts" }),
      col.display({ id: "exit", header: "Last exit", cell: (c) => exitDescription(c.row.original.last_exit_code, c.row.original.last_exit_signal) }),
      col.accessor("tags", {
        id: "tags",
        header: "Tags",
        enableSorting: false,
        cell: (c) =>
          c.getValue().map((t) => (
            <span className="chip" key={t}>
              {t}
            </span>
          )),
      }),
      col.accessor("updated_at", { id: "updated", header: "Updated", cell: (c) => relativeTime(c.getValue()) }),
    ],
    [agentNames],
  );

  const table = useReactTable({
    data: rows,
    columns,
    getRowId: (b) => b.id,
    state: { rowSelection: selection, sorting, columnVisibility: visibility },
    enableRowSelection: canControl,
    onRowSelectionChange: setSelection,
    onSortingChange: (updater) => {
      const next = typeof updater === "function" ? updater(sorting) : updater;
      const first = next[0];
      setFilters({ ...filters, sort: first?.id, dir: first?.desc ? "desc" : "asc" });
    },
    getCoreRowModel: getCoreRowModel(),
    getSortedRowModel: getSortedRowModel(),
  });


  const selectedIds = Object.keys(selection).filter((id) => selection[id]);
  const total = counts.data?.total ?? 0;
  const [pending, setPending] = useState<{ action: Action; scope: "selected" | "filter" } | null>(null);
  const bulk = useBulkAction();
  const targetCount = pending?.scope === "selected" ? selectedIds.length : total;
  const filterWords = describeFilters(filters, agentNames);

  return (
    <>
      <div className="page-head">
        <h1>Bots</h1>
        <span className="muted" data-total={total}>
          {count(total, "bot")}
          {filterWords ? ` matching ${filterWords}` : ""}
        </span>
        <span className="spacer" />
        {canEdit ? (
          <Link className="btn primary" to="/bots/new">
            New bot
          </Link>
        ) : (
          <button className="btn primary" disabled title={whyNot("edit")}>
            New bot
          </button>
        )}
      </div>
      <div className="toolbar" role="search">
        <input
          type="search"
          data-search
          aria-label="Search bots by name (press / to focus)"
          placeholder="Search by name  ( / )"
          value={nameInput}
          onChange={(e) => setNameInput(e.target.value)}
        />
        <select aria-label="Filter by state" value={filters.state ?? ""} onChange={(e) => setFilters({ ...filters, state: e.target.value || undefined })}>
          <option value="">All states</option>
          {BOT_STATES.map((s) => (
            <option key={s} value={s}>
              {s} ({counts.data?.counts[s] ?? 0})
            </option>
          ))}
        </select>
        <select aria-label="Filter by agent" value={filters.agent_id ?? ""} onChange={(e) => setFilters({ ...filters, agent_id: e.target.value || undefined })}>
          <option value="">All agents</option>
          {[...agentNames].map(([id, name]) => (
            <option key={id} value={id}>
              {name}
            </option>
          ))}
        </select>
        <input aria-label="Filter by tag" placeholder="Tag" defaultValue={filters.tag ?? ""} key={filters.tag ?? ""} onKeyDown={(e) => {
          if (e.key === "Enter") setFilters({ ...filters, tag: e.currentTarget.value.trim() || undefined });
        }} onBlur={(e) => setFilters({ ...filters, tag: e.currentTarget.value.trim() || undefined })} />
        <details>
          <summary className="btn small">View</summary>
          <fieldset className="card">
            <legend>Columns</legend>
            {HIDEABLE.map(([id, label]) => (
              <label key={id} className="row" style={{ fontWeight: 400 }}>
                <input
                  type="checkbox"
                  checked={!settings.hidden.includes(id)}
                  onChange={(e) =>
                    setSettings({ ...settings, hidden: e.target.checked ? settings.hidden.filter((h) => h !== id) : [...settings.hidden, id] })
                  }
                />
                {label}
              </label>
            ))}
            <label className="row" style={{ fontWeight: 400 }}>
              Page size
              <select value={settings.pageSize} onChange={(e) => setSettings({ ...settings, pageSize: Number(e.target.value) })}>
                {PAGE_SIZES.map((n) => (
                  <option key={n}>{n}</option>
                ))}
              </select>
            </label>
          </fieldset>
        </details>
      </div>
      {canControl ? (
        <div className="toolbar" aria-label="Bulk actions">
          <span className="muted">{selectedIds.length ? `${count(selectedIds.length, "bot")} selected:` : `All ${count(total, "bot")}${filterWords ? " matching" : ""}:`}</span>
          {(["start", "stop", "restart"] as Action[]).map((action) => (
            <button
              key={action}
              className="btn small"
              disabled={(selectedIds.length === 0 && total === 0) || bulk.isPending}
              onClick={() => setPending({ action, scope: selectedIds.length ? "selected" : "filter" })}
            >
              {cap(action)} {selectedIds.length ? "selected" : "all"}
            </button>
          ))}
        </div>
      ) : (
        <p className="muted">Starting and stopping bots {whyNot("control")}.</p>
      )}
      {bulk.data ? (
        <div className="alert ok" role="status">
          Queued {count(bulk.data.accepted, "command")}
          {bulk.data.skipped.length
            ? `; skipped ${bulk.data.skipped.map((s) => `${s.count} (${s.detail})`).join(", ")}`
            : ""}
          . States change here as the agents report them.
        </div>
      ) : null}
      <ErrorNote error={bulk.error} prefix="The bulk action failed" />
      {pages.isPending ? (
        <Loading what="bots" />
      ) : pages.isError ? (
        <ErrorNote error={pages.error} prefix="Bots could not be loaded" />
      ) : (
        <DataTable
          table={table}
          label="Bots"
          onEndReached={loadMore}
          rowProps={(b) => ({ "data-bot": b.name, "data-state": b.state })}
          empty={
            filterWords ? (
              <EmptyState title="No bot matches these filters">
                <button className="btn small" onClick={() => setFilters({})}>
                  Clear filters
                </button>
              </EmptyState>
            ) : (
              <EmptyState title="No bots yet">{canEdit ? <Link to="/bots/new">Create the first bot</Link> : "An admin can create bots."}</EmptyState>
            )
          }
        />
      )}
      {pages.hasNextPage ? <p className="muted">Showing {rows.length.toLocaleString("en")} loaded; scroll for more.</p> : null}
      <ConfirmDialog
        open={pending !== null}
        onOpenChange={(open) => !open && setPending(null)}
        title={pending ? `${cap(pending.action)} ${count(targetCount, "bot")}?` : ""}
        body={
          pending?.scope === "filter" ? (
            <>
              This will {pending.action} <strong data-confirm-count={targetCount}>{count(targetCount, "bot")}</strong>
              {filterWords ? <> matching {filterWords}</> : " (every bot)"}, not just the rows loaded here.
            </>
          ) : (
            <>
              This will {pending?.action} the <strong data-confirm-count={targetCount}>{count(targetCount, "selected bot")}</strong>.
            </>
          )
        }
        confirmLabel={pending ? `${cap(pending.action)} ${count(targetCount, "bot")}` : ""}
        danger={pending?.action !== "start"}
        busy={bulk.isPending}
        onConfirm={() => {
          if (!pending) return;
          const body =
            pending.scope === "selected"
              ? { action: pending.action, ids: selectedIds }
              : { action: pending.action, filter: query as { state?: Bot["state"]; agent_id?: string; tag?: string; name?: string } };
          bulk.mutate(body, {
            onSuccess: () => {
              setPending(null);
              setSelection({});
            },
          });
        }}
      />
    </>
  );
}

const cap = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

function describeFilters(f: BotFilters, agents: Map<string, string>): string {
  const parts: string[] = [];
  if (f.name) parts.push(`name “${f.name}”`);
  if (f.state) parts.push(`state ${f.state}`);
  if (f.agent_id) parts.push(`agent ${agents.get(f.agent_id) ?? f.agent_id.slice(-8)}`);
  if (f.tag) parts.push(`tag ${f.tag}`);
  return parts.join(", ");
}
