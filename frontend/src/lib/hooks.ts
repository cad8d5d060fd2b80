// Small hooks the list pages share.
import type { InfiniteData, UseInfiniteQueryResult } from "@tanstack/react-query";
import { useCallback, useMemo } from "react";
import { useSearchParams } from "react-router";

/** The rows of every loaded page, and a callback that loads the next page (once at a time). */
export function usePagedRows<T>(pages: UseInfiniteQueryResult<InfiniteData<{ items: T[] }>>): { rows: T[]; more: () => void } {
  const rows = useMemo(() => pages.data?.pages.flatMap((p) => p.items) ?? [], [pages.data]);
  const { hasNextPage, isFetchingNextPage, fetchNextPage } = pages;
  const more = useCallback(() => {
    if (hasNextPage && !isFetchingNextPage) void fetchNextPage();
  }, [hasNextPage, isFetchingNextPage, fetchNextPage]);
  return { rows, more };
}

/** The URL's query string, and a setter for one key (empty removes it; history is replaced). */
export function useUrlParam(): [URLSearchParams, (key: string, value: string) => void] {
  const [search, setSearch] = useSearchParams();
  const set = useCallback(
    (key: string, value: string) => {
      const next = new URLSearchParams(search);
      if (value) next.set(key, value);
      else next.delete(key);
      setSearch(next, { replace: true });
    },
    [search, setSearch],
  );
  return [search, set];
}
