// The one table of the panel: TanStack Table for columns, TanStack Virtual so that only the
// rows in view are in the DOM (10,000 bots stay fast), and `onEndReached` to load the next page.
import { flexRender, type Table } from "@tanstack/react-table";
import { useVirtualizer } from "@tanstack/react-virtual";
import { useEffect, useRef, type ReactNode } from "react";

const ROW_HEIGHT = 35;

export function DataTable<T>(props: {
  table: Table<T>;
  label: string;
  onEndReached?: () => void;
  empty?: ReactNode;
  tall?: boolean;
  rowProps?: (row: T) => Record<string, string | undefined>;
}) {
  const { table, onEndReached } = props;
  const rows = table.getRowModel().rows;
  const scroller = useRef<HTMLDivElement>(null);
  const virtual = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 12,
  });
  const items = virtual.getVirtualItems();
  const last = items[items.length - 1];
  useEffect(() => {
    if (onEndReached && last && last.index >= rows.length - 20) onEndReached();
  }, [last, rows.length, onEndReached]);

  const columns = table.getVisibleLeafColumns().length;
  const before = items[0]?.start ?? 0;
  const after = last ? virtual.getTotalSize() - last.end : 0;
  return (
    <div className={`table-wrap${props.tall === false ? "" : " tall"}`} ref={scroller} tabIndex={0} role="region" aria-label={props.label}>
      <table className="data">
        <thead>
          {table.getHeaderGroups().map((group) => (
            <tr key={group.id}>
              {group.headers.map((header) => (
                <th key={header.id} scope="col" aria-sort={sortAria(header.column.getIsSorted())}>
                  {header.isPlaceholder ? null : header.column.getCanSort() ? (
                    <button className="sort" onClick={header.column.getToggleSortingHandler()}>
                      {flexRender(header.column.columnDef.header, header.getContext())}
                      {{ asc: " ▲", desc: " ▼" }[header.column.getIsSorted() as string] ?? ""}
                    </button>
                  ) : (
                    flexRender(header.column.columnDef.header, header.getContext())
                  )}
                </th>
              ))}
            </tr>
          ))}
        </thead>
        <tbody>
          {before > 0 ? (
            <tr aria-hidden="true">
              <td colSpan={columns} style={{ height: before, padding: 0, border: 0 }} />
            </tr>
          ) : null}
          {items.map((item) => {
            const row = rows[item.index];
            if (!row) return null;
            return (
              <tr key={row.id} aria-selected={row.getIsSelected() || undefined} {...props.rowProps?.(row.original)}>
                {row.getVisibleCells().map((cell) => (
                  <td key={cell.id}>{flexRender(cell.column.columnDef.cell, cell.getContext())}</td>
                ))}
              </tr>
            );
          })}
          {after > 0 ? (
            <tr aria-hidden="true">
              <td colSpan={columns} style={{ height: after, padding: 0, border: 0 }} />
            </tr>
          ) : null}
        </tbody>
      </table>
      {rows.length === 0 ? props.empty : null}
    </div>
  );
}

function sortAria(sorted: false | "asc" | "desc"): "ascending" | "descending" | undefined {
  return sorted === "asc" ? "ascending" : sorted === "desc" ? "descending" : undefined;
}
