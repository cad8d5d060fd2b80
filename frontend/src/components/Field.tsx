import { useId, type ReactElement, cloneElement } from "react";

/** A labelled form control with its error (from the server's problem `field`) and a hint. */
export function Field(props: { label: string; error?: string; hint?: string; children: ReactElement<Record<string, unknown>> }) {
  const id = useId();
  const errorId = `${id}-error`;
  const hintId = `${id}-hint`;
  const describedBy = [props.error ? errorId : null, props.hint ? hintId : null].filter(Boolean).join(" ") || undefined;
  return (
    <div className="field">
      <label htmlFor={id}>{props.label}</label>
      {cloneElement(props.children, { id, "aria-invalid": props.error ? true : undefined, "aria-describedby": describedBy })}
      {props.hint ? (
        <span className="hint" id={hintId}>
          {props.hint}
        </span>
      ) : null}
      {props.error ? (
        <span className="error" id={errorId} role="alert">
          {props.error}
        </span>
      ) : null}
    </div>
  );
}
