// Create or edit a bot. The server validates; its problem's `field` puts the message under
// the input it is about. Edits send `If-Match` with the version they started from.
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useEffect, useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { useCan } from "../../app/session";
import { EmptyState, ErrorNote, Loading } from "../../components/Feedback";
import { Field } from "../../components/Field";
import { api, ApiError, unwrap } from "../../lib/api/client";
import { keys } from "../../lib/live";
import { useAgents } from "../agents/api";
import { useBot } from "./api";
import { EMPTY_FORM, formFieldOf, fromBot, localErrors, toSpec, type BotFormValues, type FormField, type LocalErrors } from "./form";

export default function BotFormPage() {
  const { id } = useParams();
  const editing = id !== undefined;
  const bot = useBot(id ?? "");
  if (!useCan("edit")) return <EmptyState title="Only admins can create or change bots">Ask an admin, or view the bots list.</EmptyState>;
  if (editing && bot.isPending) return <Loading what="the bot" />;
  if (editing && bot.isError) return <ErrorNote error={bot.error} />;
  return <BotForm id={id} initial={editing && bot.data ? fromBot(bot.data) : EMPTY_FORM} version={bot.data?.version} />;
}

function BotForm({ id, initial, version }: { id?: string; initial: BotFormValues; version?: number }) {
  const [v, setV] = useState(initial);
  const [errors, setErrors] = useState<LocalErrors>({});
  const agents = useAgents();
  const navigate = useNavigate();
  const qc = useQueryClient();
  useEffect(() => {
    const only = agents.data?.length === 1 ? agents.data[0] : undefined;
    if (!v.agent_id && only) setV((old) => ({ ...old, agent_id: only.id }));
  }, [agents.data, v.agent_id]);

  const save = useMutation({
    mutationFn: () => {
      const spec = toSpec(v);
      if (!id) return unwrap(api.POST("/api/v1/bots", { body: spec }));
      const { desired_state: _ignored, ...patch } = spec;
      return unwrap(
        api.PATCH("/api/v1/bots/{id}", {
          params: { path: { id }, header: { "If-Match": version !== undefined ? `"${version}"` : undefined } },
          body: patch,
        }),
      );
    },
    onSuccess: (saved) => {
      qc.setQueryData(keys.bot(saved.id), saved);
      void qc.invalidateQueries({ queryKey: ["bots", "list"] });
      void qc.invalidateQueries({ queryKey: ["bots", "counts"] });
      navigate(`/bots/${saved.id}`);
    },
    onError: (error) => {
      const field = error instanceof ApiError ? formFieldOf(error.problem.field) : null;
      if (field && error instanceof ApiError) setErrors({ [field]: error.problem.detail + (error.problem.hint ? ` (${error.problem.hint})` : "") });
    },
  });

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const local = localErrors(v);
    setErrors(local);
    if (Object.keys(local).length === 0) save.mutate();
  };
  const input = (field: FormField, extra: Record<string, unknown> = {}) => ({
    name: field,
    value: v[field] as string,
    onChange: (e: { target: { value: string } }) => setV({ ...v, [field]: e.target.value }),
    ...extra,
  });
  const serverErrorIsGeneral = save.error && !(save.error instanceof ApiError && formFieldOf(save.error.problem.field));

  return (
    <form className="form" onSubmit={submit} noValidate aria-labelledby="form-title">
      <div className="page-head">
        <h1 id="form-title">{id ? `Edit ${initial.name}` : "New bot"}</h1>
      </div>
      <section className="card form">
        <div className="form-grid">
          <Field label="Name" error={errors.name} hint="Letters, digits, . _ -; e.g. farmer-eu-01">
            <input {...input("name", { required: true, autoFocus: !id })} />
          </Field>
          <Field label="Agent" error={errors.agent_id}>
            <select {...input("agent_id")}>
              <option value="">Choose an agent…</option>
              {(agents.data ?? []).map((a) => (
                <option key={a.id} value={a.id}>
                  {a.name} ({a.status})
                </option>
              ))}
            </select>
          </Field>
          <Field label="Tags" error={errors.tags} hint="Comma-separated, e.g. eu, farm">
            <input {...input("tags")} />
          </Field>
        </div>
        <div className="form-grid">
          <Field label="Program" error={errors.program} hint="Found on the agent's PATH, or an absolute path">
            <input {...input("program", { required: true })} />
          </Field>
          <Field label="Working directory" error={errors.cwd}>
            <input {...input("cwd")} />
          </Field>
        </div>
        <Field label="Arguments" error={errors.args} hint="One per line">
          <textarea rows={3} {...input("args")} />
        </Field>
        <div className="form-grid">
          <Field label="Environment" error={errors.env} hint="KEY=value, one per line">
            <textarea rows={3} {...input("env")} />
          </Field>
          <Field label="Secret environment" error={errors.secret_env} hint="KEY=secret-name, one per line; values come from Secrets">
            <textarea rows={3} {...input("secret_env")} />
          </Field>
        </div>
      </section>
      <section className="card form" aria-labelledby="restart-title">
        <h2 id="restart-title">Restart and stop</h2>
        <div className="form-grid">
          <Field label="Restart policy" error={errors.policy}>
            <select {...input("policy")}>
              <option value="on-failure">on failure</option>
              <option value="always">always</option>
              <option value="never">never</option>
            </select>
          </Field>
          <Field label="Max restarts" error={errors.max_restarts}>
            <input inputMode="numeric" {...input("max_restarts")} />
          </Field>
          <Field label="Within (seconds)" error={errors.window_seconds}>
            <input inputMode="numeric" {...input("window_seconds")} />
          </Field>
          <Field label="First backoff (ms)" error={errors.backoff_initial_ms}>
            <input inputMode="numeric" {...input("backoff_initial_ms")} />
          </Field>
          <Field label="Max backoff (ms)" error={errors.backoff_max_ms}>
            <input inputMode="numeric" {...input("backoff_max_ms")} />
          </Field>
          <Field label="Stable after (seconds)" error={errors.stable_after_seconds}>
            <input inputMode="numeric" {...input("stable_after_seconds")} />
          </Field>
          <Field label="Stop timeout (seconds)" error={errors.stop_timeout_seconds}>
            <input inputMode="numeric" {...input("stop_timeout_seconds")} />
          </Field>
        </div>
        {!id ? (
          <label className="row" style={{ fontWeight: 400 }}>
            <input type="checkbox" checked={v.start_now} onChange={(e) => setV({ ...v, start_now: e.target.checked })} /> Start it once created
          </label>
        ) : null}
      </section>
      {serverErrorIsGeneral ? <ErrorNote error={save.error} prefix="Not saved" /> : null}
      {save.error && !serverErrorIsGeneral ? (
        <div className="alert bad" role="alert">
          Not saved: fix the highlighted field.
        </div>
      ) : null}
      <div className="row">
        <button className="btn primary" type="submit" disabled={save.isPending}>
          {save.isPending ? "Saving…" : id ? "Save changes" : "Create bot"}
        </button>
        <Link className="btn" to={id ? `/bots/${id}` : "/bots"}>
          Cancel
        </Link>
      </div>
    </form>
  );
}
