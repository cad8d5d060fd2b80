import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { useCan, useSession } from "../../app/session";
import { EmptyState, ErrorNote } from "../../components/Feedback";
import { Field } from "../../components/Field";
import { Listing, PlainTable } from "../../components/PlainTable";
import { Modal } from "../../components/Modal";
import { api, ApiError, unwrap } from "../../lib/api/client";
import type { components } from "../../lib/api/schema";
import { relativeTime } from "../../lib/format";

type User = components["schemas"]["User"];
type Role = components["schemas"]["Role"];
const ROLES: Role[] = ["viewer", "operator", "admin"];

export default function UsersPage() {
  const admin = useCan("admin");
  const me = useSession()?.user.id;
  const qc = useQueryClient();
  const users = useQuery({ queryKey: ["users"], queryFn: () => unwrap(api.GET("/api/v1/users")), enabled: admin });
  const [form, setForm] = useState({ username: "", email: "", password: "", role: "viewer" as Role });
  const [resetting, setResetting] = useState<User | null>(null);
  const [newPassword, setNewPassword] = useState("");
  const done = () => void qc.invalidateQueries({ queryKey: ["users"] });
  const create = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/users", { body: { username: form.username.trim(), email: form.email.trim() || undefined, password: form.password, role: form.role } })),
    onSuccess: () => {
      setForm({ username: "", email: "", password: "", role: "viewer" });
      done();
    },
  });
  const update = useMutation({
    mutationFn: ({ id, patch }: { id: string; patch: components["schemas"]["UpdateUser"] }) => unwrap(api.PATCH("/api/v1/users/{id}", { params: { path: { id } }, body: patch })),
    onSuccess: () => {
      setResetting(null);
      setNewPassword("");
      done();
    },
  });
  if (!admin) return <EmptyState title="Users are managed by admins" />;
  const field = create.error instanceof ApiError ? create.error.problem.field : undefined;
  const submit = (e: FormEvent) => {
    e.preventDefault();
    create.mutate();
  };

  return (
    <>
      <div className="page-head">
        <h1>Users</h1>
      </div>
      <form className="card form" onSubmit={submit} aria-labelledby="new-user">
        <h2 id="new-user">Add a user</h2>
        <div className="form-grid">
          <Field label="Username" error={field === "username" ? create.error?.message : undefined}>
            <input value={form.username} onChange={(e) => setForm({ ...form, username: e.target.value })} required autoComplete="off" />
          </Field>
          <Field label="Email (optional)" error={field === "email" ? create.error?.message : undefined}>
            <input type="email" value={form.email} onChange={(e) => setForm({ ...form, email: e.target.value })} />
          </Field>
          <Field label="Password" error={field === "password" ? create.error?.message : undefined} hint="They can change it after signing in">
            <input type="password" value={form.password} onChange={(e) => setForm({ ...form, password: e.target.value })} required autoComplete="new-password" />
          </Field>
          <Field label="Role">
            <select value={form.role} onChange={(e) => setForm({ ...form, role: e.target.value as Role })}>
              {ROLES.map((r) => (
                <option key={r}>{r}</option>
              ))}
            </select>
          </Field>
        </div>
        {create.error && !field ? <ErrorNote error={create.error} prefix="Not added" /> : null}
        <div>
          <button className="btn primary" type="submit" disabled={create.isPending}>
            Add user
          </button>
        </div>
      </form>
      <ErrorNote error={update.error} prefix="Not changed" />
      <section className="card" aria-labelledby="user-list">
        <h2 id="user-list">Users</h2>
        <Listing query={users} what="users" empty={null}>
          {(rows) => (
            <PlainTable headers={["Username", "Email", "Role", "Status", "Created", ""]}>
                {rows.map((u) => (
                  <tr key={u.id} data-user-row={u.username}>
                    <td>{u.username}</td>
                    <td>{u.email ?? ""}</td>
                    <td>
                      <select
                        aria-label={`Role of ${u.username}`}
                        value={u.role}
                        disabled={u.id === me}
                        title={u.id === me ? "you cannot change your own role" : undefined}
                        onChange={(e) => update.mutate({ id: u.id, patch: { role: e.target.value as Role } })}
                      >
                        {ROLES.map((r) => (
                          <option key={r}>{r}</option>
                        ))}
                      </select>
                    </td>
                    <td>{u.disabled ? <span className="badge bad">disabled</span> : <span className="badge ok">active</span>}</td>
                    <td>{relativeTime(u.created_at)}</td>
                    <td className="row">
                      <button className="btn small" disabled={u.id === me} onClick={() => update.mutate({ id: u.id, patch: { disabled: !u.disabled } })}>
                        {u.disabled ? "Enable" : "Disable"}
                      </button>
                      <button className="btn small" onClick={() => setResetting(u)}>
                        Reset password
                      </button>
                    </td>
                  </tr>
                ))}
            </PlainTable>
          )}
        </Listing>
      </section>
      <Modal open={resetting !== null} onOpenChange={(open) => !open && setResetting(null)} title={`Reset the password of ${resetting?.username ?? ""}`}>
        <form
          className="form"
          onSubmit={(e) => {
            e.preventDefault();
            if (resetting) update.mutate({ id: resetting.id, patch: { password: newPassword } });
          }}
        >
          <Field label="New password" hint="Their sessions end; tell them the new password another way">
            <input type="password" value={newPassword} onChange={(e) => setNewPassword(e.target.value)} required autoComplete="new-password" />
          </Field>
          <ErrorNote error={update.error} />
          <div className="actions">
            <button type="button" className="btn" onClick={() => setResetting(null)}>
              Cancel
            </button>
            <button className="btn primary" type="submit" disabled={update.isPending || !newPassword}>
              Set password
            </button>
          </div>
        </form>
      </Modal>
    </>
  );
}
