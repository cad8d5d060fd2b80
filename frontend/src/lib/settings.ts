// View settings remembered per browser (columns shown, page size). Settings only: nothing
// from the server and never a credential goes into localStorage.

export interface TableSettings {
  hidden: string[];
  pageSize: number;
}

export const PAGE_SIZES = [50, 100, 200, 500] as const;
const DEFAULTS: TableSettings = { hidden: [], pageSize: 200 };

export function loadSettings(table: string, storage: Pick<Storage, "getItem"> | undefined = globalThis.localStorage): TableSettings {
  try {
    const raw = storage?.getItem(`botmox.table.${table}`);
    if (!raw) return { ...DEFAULTS };
    const parsed = JSON.parse(raw) as Partial<TableSettings>;
    return {
      hidden: Array.isArray(parsed.hidden) ? parsed.hidden.filter((h): h is string => typeof h === "string") : [],
      pageSize: (PAGE_SIZES as readonly number[]).includes(parsed.pageSize ?? 0) ? (parsed.pageSize as number) : DEFAULTS.pageSize,
    };
  } catch {
    return { ...DEFAULTS };
  }
}

export function saveSettings(table: string, settings: TableSettings, storage: Pick<Storage, "setItem"> | undefined = globalThis.localStorage): void {
  try {
    storage?.setItem(`botmox.table.${table}`, JSON.stringify({ hidden: settings.hidden, pageSize: settings.pageSize }));
  } catch {
    // Storage full or disabled: the setting lasts for this visit only.
  }
}
