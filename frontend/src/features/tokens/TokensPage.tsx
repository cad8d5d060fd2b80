import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { useSession } from "../../app/session";
import { CopyButton, EmptyState, ErrorNote } from "../../components/Feedback";
import { Field } from "../../components/Field";
import { Listing, PlainTable } from "../../components/PlainTable";
import { ConfirmDialog, Modal } from "../../components/Modal";
import { api, unwrap } from "../../lib/api/client";
import type { components } from "../../lib/api/schema";
import { absoluteTime, relativeTime } from "../../lib/format";
import { atLeast, type Role } from "../../lib/permissions";

type Scope = components["schemas"]["Scope"];
type Created = components["schemas"]["CreatedApiToken"];
/** Each scope with the least role that may hold it (a token never exceeds its maker's role). */
const SCOPES: [Scope, "viewer" | "operator" | "admin"][] = [
  ["bots:read", "viewer"],
  ["agents:read", "viewer"],
  ["commands:read", "viewer"],
  ["bots:control", "operator"],
  ["commands:write", "operator"],
  ["bots:write", "admin"],
  ["agents:write", "admin"],
  ["secrets:write", "admin"],
  ["audit:read", "admin"],
  ["admin", "admin"],
];
const TTLS: [string, number | undefined][] = [
  ["30 days", 30 * 86_400],
  ["90 days", 90 * 86_400],
  ["1 year", 365 * 86_400],
  ["never", undefined],
];

export default function TokensPage() {
  const session = useSession();
  const role = session?.user.role as Role | undefined;
  const qc = useQueryClient();
  const tokens = useQuery({ queryKey: ["tokens"], queryFn: () => unwrap(api.GET("/api/v1/tokens")) });
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState<Scope[]>(["bots:read"]);
  const [ttl, setTtl] = useState(0);
  const [created, setCreated] = useState<Created | null>(null);
  const [revoking, setRevoking] = useState<{ id: string; name: string } | null>(null);
  const create = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/tokens", { body: { name: name.trim(), scopes, ttl_seconds: TTLS[ttl]?.[1] } })),
    onSuccess: (token) => {
      setCreated(token);
      setName("");
      void qc.invalidateQueries({ queryKey: ["tokens"] });
    },
  });
  const revoke = useMutation({
    mutationFn: (id: string) => unwrap(api.DELETE("/api/v1/tokens/{id}", { params: { path: { id } } })),
    onSuccess: () => {
      setRevoking(null);
      void qc.invalidateQueries({ queryKey: ["tokens"] });
    },
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    create.mutate();
  };

  return (
    <>
      <div className="page-head">
        <h1>API tokens</h1>
      </div>
      <p className="muted">
        For scripts and CI: send <code>Authorization: Bearer bmx_…</code>. A token never grants more than your role ({role}).
      </p>
      <form className="card form" onSubmit={submit} aria-labelledby="new-token">
        <h2 id="new-token">Create a token</h2>
        <div className="form-grid">
          <Field label="Name" hint="What it is for, e.g. ci-deploy">
            <input value={name} onChange={(e) => setName(e.target.value)} required />
          </Field>
          <Field label="Expires">
            <select value={ttl} onChange={(e) => setTtl(Number(e.target.value))}>
              {TTLS.map(([label], i) => (
                <option key={label} value={i}>
                  {label}
                </option>
              ))}
            </select>
          </Field>
        </div>
        <fieldset className="row" style={{ border: 0, padding: 0, margin: 0 }}>
          <legend style={{ fontWeight: 600, marginBottom: 4 }}>Scopes</legend>
          {SCOPES.map(([scope, needs]) => {
            const allowed = atLeast(role, needs);
            return (
              <label key={scope} className="chip" style={{ fontWeight: 400, padding: "2px 8px" }} title={allowed ? undefined : `needs the ${needs} role`}>
                <input
                  type="checkbox"
                  disabled={!allowed}
                  checked={scopes.includes(scope)}
                  onChange={(e) => setScopes(e.target.checked ? [...scopes, scope] : scopes.filter((s) => s !== scope))}
                />{" "}
                {scope}
              </label>
            );
          })}
        </fieldset>
        <ErrorNote error={create.error} prefix="Not created" />
        <div>
          <button className="btn primary" type="submit" disabled={create.isPending || !name.trim() || scopes.length === 0}>
            Create token
          </button>
        </div>
      </form>
      <section className="card" aria-labelledby="token-list">
        <h2 id="token-list">Your tokens</h2>
        <Listing query={tokens} what="tokens" empty={<EmptyState title="No tokens yet">Create one above for a script or CI job.</EmptyState>}>
          {(rows) => (
            <PlainTable headers={["Name", "Scopes", "Expires", "Last used", "Status", ""]}>
                {rows.map((t) => (
                  <tr key={t.id} data-token={t.name}>
                    <td>{t.name}</td>
                    <td className="wrap">
                      {t.scopes.map((s) => (
                        <span className="chip" key={s}>
                          {s}
                        </span>
                      ))}
                    </td>
                    <td title={absoluteTime(t.expires_at)}>{t.expires_at ? relativeTime(t.expires_at) : "never"}</td>
                    <td>{relativeTime(t.last_used_at)}</td>
                    <td>{t.revoked_at ? <span className="badge">revoked</span> : <span className="badge ok">active</span>}</td>
                    <td>
                      {t.revoked_at ? null : (
                        <button className="btn small danger" onClick={() => setRevoking({ id: t.id, name: t.name })}>
                          Revoke
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
            </PlainTable>
          )}
        </Listing>
      </section>
      <Modal open={created !== null} onOpenChange={(open) => !open && setCreated(null)} title={`Token ${created?.token.name ?? ""} created`} description="Copy the secret now: it is shown this once and cannot be read again.">
        <div className="secret-box">
          <code data-token-secret>{created?.secret}</code>
          <CopyButton text={created?.secret ?? ""} />
        </div>
        <div className="actions">
          <button className="btn primary" onClick={() => setCreated(null)}>
            I have copied it
          </button>
        </div>
      </Modal>
      <ConfirmDialog
        open={revoking !== null}
        onOpenChange={(open) => !open && setRevoking(null)}
        title={`Revoke ${revoking?.name ?? ""}?`}
        body="Scripts using it are refused from the next request on."
        confirmLabel="Revoke token"
        danger
        busy={revoke.isPending}
        error={<ErrorNote error={revoke.error} />}
        onConfirm={() => revoking && revoke.mutate(revoking.id)}
      />
    </>
  );
}
