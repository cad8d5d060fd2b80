import * as Dialog from "@radix-ui/react-dialog";
import type { ReactNode } from "react";

/** A dialog with a title, a description for screen readers, focus trapped, Escape to close. */
export function Modal(props: { open: boolean; onOpenChange: (open: boolean) => void; title: string; description?: string; children: ReactNode }) {
  return (
    <Dialog.Root open={props.open} onOpenChange={props.onOpenChange}>
      <Dialog.Portal>
        <Dialog.Overlay className="overlay" />
        <Dialog.Content className="dialog" aria-describedby={props.description ? undefined : undefined}>
          <Dialog.Title asChild>
            <h2>{props.title}</h2>
          </Dialog.Title>
          <Dialog.Description className={props.description ? "muted" : "visually-hidden"}>{props.description ?? props.title}</Dialog.Description>
          {props.children}
        </Dialog.Content>
      </Dialog.Portal>
    </Dialog.Root>
  );
}

/** "Are you sure?" for destructive or wide actions; the body names what will happen. */
export function ConfirmDialog(props: {
  open: boolean;
  onOpenChange: (open: boolean) => void;
  title: string;
  body: ReactNode;
  confirmLabel: string;
  danger?: boolean;
  busy?: boolean;
  error?: ReactNode;
  onConfirm: () => void;
}) {
  return (
    <Modal open={props.open} onOpenChange={props.onOpenChange} title={props.title}>
      <div>{props.body}</div>
      {props.error}
      <div className="actions">
        <button className="btn" onClick={() => props.onOpenChange(false)}>
          Cancel
        </button>
        <button className={`btn ${props.danger ? "danger" : "primary"}`} disabled={props.busy} onClick={props.onConfirm}>
          {props.busy ? "Working…" : props.confirmLabel}
        </button>
      </div>
    </Modal>
  );
}
