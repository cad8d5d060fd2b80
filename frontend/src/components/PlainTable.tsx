import type { UseQueryResult } from "@tanstack/react-query";
import type { ReactNode } from "react";
import { ErrorNote, Loading } from "./Feedback";

/** A short list's table (secrets, tokens, users); an empty header names the actions column. */
export function PlainTable({ headers, children }: { headers: string[]; children: ReactNode }) {
  return (
    <div className="table-wrap">
      <table className="data">
        <thead>
          <tr>
            {headers.map((h) => (
              <th scope="col" key={h || "actions"}>
                {h || <span className="visually-hidden">Actions</span>}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}

/** A query's list: loading, its error, the empty state, or `children` with the rows. */
export function Listing<T>({ query, what, empty, children }: { query: UseQueryResult<T[]>; what: string; empty: ReactNode; children: (rows: T[]) => ReactNode }) {
  if (query.isPending) return <Loading what={what} />;
  if (query.isError) return <ErrorNote error={query.error} prefix={`The ${what} could not be loaded`} />;
  return query.data.length === 0 ? empty : children(query.data);
}
