import { useMutation } from "@tanstack/react-query";
import { useRef, useState } from "react";
import { Link } from "react-router";
import { useLiveEvents } from "../../app/live";
import { CopyButton, ErrorNote } from "../../components/Feedback";
import { Field } from "../../components/Field";
import { Modal } from "../../components/Modal";
import { api, unwrap } from "../../lib/api/client";
import { relativeTime } from "../../lib/format";

/** Linux/macOS and Windows spellings of the pairing command the server returns. */
export function commandLines(commandLine: string): { os: string; line: string }[] {
  const rest = commandLine.replace(/^botmox-agent(\.exe)?\s+/, "");
  return [
    { os: "Linux / macOS", line: `botmox-agent ${rest}` },
    { os: "Windows (PowerShell)", line: `.\\botmox-agent.exe ${rest}` },
  ];
}

export function PairAgentDialog(props: { open: boolean; onOpenChange: (open: boolean) => void; knownAgentIds: string[] }) {
  const [name, setName] = useState("");
  const [connected, setConnected] = useState<{ id: string; name: string } | null>(null);
  const known = useRef(new Set<string>());
  const create = useMutation({
    mutationFn: () => {
      known.current = new Set(props.knownAgentIds);
      setConnected(null);
      return unwrap(api.POST("/api/v1/agents/pairing-codes", { body: { name: name.trim() || undefined, labels: {} } }));
    },
  });
  // Waits for the new agent's first connection, announced live by the server.
  useLiveEvents((event) => {
    if (!create.data || connected || event.type !== "agent_presence") return;
    if (event.data.status === "online" && !known.current.has(event.data.agent_id)) {
      setConnected({ id: event.data.agent_id, name: event.data.name });
    }
  });
  const close = (open: boolean) => {
    props.onOpenChange(open);
    if (!open) {
      create.reset();
      setConnected(null);
      setName("");
    }
  };

  return (
    <Modal open={props.open} onOpenChange={close} title="Pair an agent" description="Create a one-time code, then run one command on the host.">
      {!create.data ? (
        <form
          className="form"
          onSubmit={(e) => {
            e.preventDefault();
            create.mutate();
          }}
        >
          <Field label="Agent name (optional)" hint="Defaults to the host's name.">
            <input value={name} onChange={(e) => setName(e.target.value)} maxLength={100} />
          </Field>
          <ErrorNote error={create.error} />
          <div className="actions">
            <button type="button" className="btn" onClick={() => close(false)}>
              Cancel
            </button>
            <button className="btn primary" type="submit" disabled={create.isPending}>
              {create.isPending ? "Creating…" : "Create pairing code"}
            </button>
          </div>
        </form>
      ) : (
        <>
          <div>
            Code <code data-pairing-code>{create.data.code}</code> — single use, expires {relativeTime(create.data.expires_at)}.
          </div>
          {commandLines(create.data.command_line).map(({ os, line }) => (
            <div key={os}>
              <h3>{os}</h3>
              <div className="secret-box">
                <code data-command-line={os}>{line}</code>
                <CopyButton text={line} label={`Copy`} />
              </div>
            </div>
          ))}
          <p className="muted">Then start it: <code>botmox-agent run</code> (or install the service: <code>botmox-agent service install</code>).</p>
          {connected ? (
            <div className="alert ok" role="status" data-connected={connected.name}>
              Agent {connected.name} connected. <Link to={`/agents/${connected.id}`}>Open it</Link>
            </div>
          ) : (
            <div className="alert info" role="status" aria-live="polite">
              Waiting for the agent to connect…
            </div>
          )}
          <div className="actions">
            <button className="btn" onClick={() => close(false)}>
              {connected ? "Done" : "Close"}
            </button>
          </div>
        </>
      )}
    </Modal>
  );
}
