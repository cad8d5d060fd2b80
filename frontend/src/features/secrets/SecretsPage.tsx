import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { useCan } from "../../app/session";
import { EmptyState, ErrorNote } from "../../components/Feedback";
import { Field } from "../../components/Field";
import { Listing, PlainTable } from "../../components/PlainTable";
import { ConfirmDialog } from "../../components/Modal";
import { api, ApiError, unwrap } from "../../lib/api/client";
import { absoluteTime, relativeTime } from "../../lib/format";

export default function SecretsPage() {
  const admin = useCan("admin");
  const qc = useQueryClient();
  const secrets = useQuery({ queryKey: ["secrets"], queryFn: () => unwrap(api.GET("/api/v1/secrets")), enabled: admin });
  const [name, setName] = useState("");
  const [value, setValue] = useState("");
  const [saved, setSaved] = useState<string | null>(null);
  const [deleting, setDeleting] = useState<string | null>(null);
  const put = useMutation({
    mutationFn: () => unwrap(api.PUT("/api/v1/secrets/{name}", { params: { path: { name: name.trim() } }, body: { value } })),
    onSuccess: (meta) => {
      setSaved(meta.name);
      setName("");
      setValue("");
      void qc.invalidateQueries({ queryKey: ["secrets"] });
    },
  });
  const remove = useMutation({
    mutationFn: (n: string) => unwrap(api.DELETE("/api/v1/secrets/{name}", { params: { path: { name: n } } })),
    onSuccess: () => {
      setDeleting(null);
      void qc.invalidateQueries({ queryKey: ["secrets"] });
    },
  });
  if (!admin) return <EmptyState title="Secrets are managed by admins">Bots name secrets in their secret environment; an admin sets the values.</EmptyState>;
  const fieldError = put.error instanceof ApiError && put.error.problem.field ? put.error.problem.detail : undefined;
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setSaved(null);
    put.mutate();
  };

  return (
    <>
      <div className="page-head">
        <h1>Secrets</h1>
      </div>
      <p className="muted">Values go in and never come back out: they are sent only to the agent of a bot whose secret environment names them.</p>
      <form className="card form" onSubmit={submit} aria-labelledby="set-secret">
        <h2 id="set-secret">Set a secret</h2>
        <div className="form-grid">
          <Field label="Name" error={fieldError} hint="Letters, digits, . _ -; setting an existing name replaces its value">
            <input value={name} onChange={(e) => setName(e.target.value)} required autoComplete="off" />
          </Field>
          <Field label="Value" hint="Write-only">
            <input type="password" value={value} onChange={(e) => setValue(e.target.value)} required autoComplete="new-password" />
          </Field>
        </div>
        {put.error && !fieldError ? <ErrorNote error={put.error} prefix="Not saved" /> : null}
        {saved ? (
          <div className="alert ok" role="status">
            Secret {saved} saved.
          </div>
        ) : null}
        <div>
          <button className="btn primary" type="submit" disabled={put.isPending || !name.trim() || !value}>
            Save secret
          </button>
        </div>
      </form>
      <section className="card" aria-labelledby="secret-list">
        <h2 id="secret-list">Stored secrets</h2>
        <Listing query={secrets} what="secrets" empty={<EmptyState title="No secrets yet">Set one above, then name it in a bot's secret environment (KEY=secret-name).</EmptyState>}>
          {(rows) => (
            <PlainTable headers={["Name", "Created", "Updated", ""]}>
                {rows.map((s) => (
                  <tr key={s.name} data-secret={s.name}>
                    <td>
                      <code>{s.name}</code>
                    </td>
                    <td title={absoluteTime(s.created_at)}>{relativeTime(s.created_at)}</td>
                    <td title={absoluteTime(s.updated_at)}>{relativeTime(s.updated_at)}</td>
                    <td>
                      <button className="btn small danger" onClick={() => setDeleting(s.name)}>
                        Delete
                      </button>
                    </td>
                  </tr>
                ))}
            </PlainTable>
          )}
        </Listing>
      </section>
      <ConfirmDialog
        open={deleting !== null}
        onOpenChange={(open) => !open && setDeleting(null)}
        title={`Delete secret ${deleting ?? ""}?`}
        body="Bots that name it will fail to start until it is set again."
        confirmLabel="Delete secret"
        danger
        busy={remove.isPending}
        error={<ErrorNote error={remove.error} />}
        onConfirm={() => deleting && remove.mutate(deleting)}
      />
    </>
  );
}
