import { useState, type ReactNode } from "react";
import { describeError } from "../lib/api/client";

export function EmptyState(props: { title: string; children?: ReactNode }) {
  return (
    <div className="empty" role="status">
      <strong>{props.title}</strong>
      {props.children}
    </div>
  );
}

/** What went wrong, and what to try. */
export function ErrorNote({ error, prefix }: { error: unknown; prefix?: string }) {
  if (!error) return null;
  const { message, hint } = describeError(error);
  return (
    <div className="alert bad" role="alert">
      {prefix ? `${prefix}: ` : ""}
      {message}
      {hint ? <div>Try: {hint}</div> : null}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <div className="empty" role="status" aria-live="polite">
      Loading {what}…
    </div>
  );
}

export function CopyButton({ text, label = "Copy" }: { text: string; label?: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <button
      className="btn small"
      type="button"
      onClick={() => {
        void navigator.clipboard?.writeText(text).then(
          () => setCopied(true),
          () => setCopied(false),
        );
        setTimeout(() => setCopied(false), 2_000);
      }}
    >
      {copied ? "Copied" : label}
    </button>
  );
}
