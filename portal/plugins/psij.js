// Portal module of the psij plugin: submit jobs, a jobs table updated live from `job_status` events, and a job
// view that streams stdout/stderr from `job_output` events (and reads what it missed with `status`).

import {
  FINAL_STATES,
  KeyedTable,
  badge,
  card,
  errorText,
  facts,
  fmtTime,
  h,
  note,
  setBadge,
  setText,
  splitArgs,
} from "/portal/dom.js";

/** most characters of one stream the job view keeps (the oldest go first) */
const MAX_VIEW_CHARS = 2_000_000;

export async function render(root, ctx) {
  const [view, jobId] = ctx.subpath || [];
  if (view === "job" && jobId) return renderJob(root, ctx, jobId);
  return renderList(root, ctx);
}

/** An argument as a shell would need it written (for display only). */
const quoted = (a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${String(a).replaceAll("'", "'\\''")}'`);
const commandOf = (job) => [job.executable || "", ...(job.arguments || []).map(quoted)].join(" ").trim() || "–";
const baseName = (p) => String(p || "").split("/").pop();
const shortId = (id) => String(id || "").slice(0, 8);

// ------------------------------------------------------------------ the jobs table and the submit form

async function renderList(root, ctx) {
  const api = ctx.api;
  const counts = h("span.muted");
  const table = new KeyedTable({
    key: (j) => String(j.job_id),
    compare: (a, b) => (b.submitted || 0) - (a.submitted || 0) || String(a.job_id).localeCompare(String(b.job_id)),
    empty: "No jobs yet. Submit one above; jobs submitted with the SDK or the command line show up here too.",
    onRowClick: (job) => ctx.navigate("job", job.job_id),
    columns: [
      {
        key: "state",
        label: "State",
        value: (j) => j.state || "UNKNOWN",
        render: (td, j, v) => (td.firstChild ? setBadge(td.firstChild, v) : td.append(badge(v))),
      },
      {
        key: "job",
        label: "Job",
        value: (j) => `${j.name || ""}\u0000${j.executable || ""}\u0000${j.job_id}`,
        render: (td, j) =>
          td.replaceChildren(
            h("a", { href: ctx.href("job", j.job_id) }, j.name || baseName(j.executable) || shortId(j.job_id)),
            h("div.mono.muted", shortId(j.job_id)),
          ),
      },
      { key: "command", label: "Command", cls: "mono wide", value: commandOf },
      { key: "executor", label: "Executor" },
      { key: "native_id", label: "Native id", cls: "mono" },
      { key: "submitted", label: "Submitted", cls: "nowrap", value: (j) => fmtTime(j.submitted) },
      { key: "exit_code", label: "Exit", cls: "num", value: (j) => (j.exit_code === null || j.exit_code === undefined ? "–" : String(j.exit_code)) },
      {
        key: "actions",
        label: "",
        cls: "actions",
        value: (j) => (FINAL_STATES.has(j.state) ? "final" : "live"),
        render: (td, j, v) => {
          td.replaceChildren(
            v === "live"
              ? h("button.small.danger", { type: "button", on: { click: () => cancelJob(ctx, j.job_id) } }, "Cancel")
              : "",
          );
        },
      },
    ],
  });

  let countTimer = 0;
  const updateCounts = () => {
    if (countTimer) return;
    countTimer = requestAnimationFrame(() => {
      countTimer = 0;
      const by = {};
      for (const k of table.order) {
        const s = table.get(k).state || "UNKNOWN";
        by[s] = (by[s] || 0) + 1;
      }
      const parts = ["RUNNING", "PENDING", "HELD", "DONE", "FAILED", "CANCELLED", "UNKNOWN"].filter((s) => by[s]).map((s) => `${by[s]} ${s.toLowerCase()}`);
      setText(counts, `${table.size} job${table.size === 1 ? "" : "s"}${parts.length ? `: ${parts.join(", ")}` : ""}`);
    });
  };

  const listStatus = h("div");
  const load = async () => {
    try {
      const answer = await api.sget("list_jobs");
      table.setAll(answer.jobs || []);
      listStatus.replaceChildren();
      updateCounts();
    } catch (err) {
      listStatus.replaceChildren(note(`Could not list the jobs: ${errorText(err)}`, "error"));
    }
  };

  let fillTimer = null;
  const fillLater = () => {
    // jobs this page has not seen (submitted elsewhere): one listing fills in their records
    clearTimeout(fillTimer);
    fillTimer = setTimeout(load, 1000);
  };

  ctx.on("job_status", (d) => {
    if (!d || !d.job_id) return;
    const id = String(d.job_id);
    const known = table.has(id);
    const row = { job_id: id, state: d.state, exit_code: d.exit_code, message: d.message, updated: d.time };
    if (!known) {
      if (d.native_id !== undefined) row.native_id = d.native_id;
      if (d.executor !== undefined) row.executor = d.executor;
      row.submitted = d.time;
      fillLater();
    }
    table.upsert(row);
    updateCounts();
  });
  ctx.onResync(load);

  const jobsCard = card("Jobs", {
    actions: [counts, h("button.secondary.small", { type: "button", on: { click: load } }, "Refresh")],
  });
  jobsCard.body.append(listStatus, table.el);
  const form = await submitForm(ctx, (answer) => {
    table.upsert({ ...answer.row, job_id: answer.job_id, native_id: answer.native_id, executor: answer.executor, state: answer.state, submitted: Date.now() / 1000 });
    updateCounts();
  });
  root.append(form, jobsCard.el);
  await load();
}

async function cancelJob(ctx, jobId) {
  const ok = await ctx.confirm({
    title: "Cancel this job?",
    body: `Job ${jobId} is stopped (the batch system is told to cancel it). This cannot be undone.`,
    action: "Cancel job",
  });
  if (!ok) return;
  try {
    const answer = await ctx.api.spost("cancel", encodeURIComponent(jobId));
    ctx.toast(answer.cancelled ? `Job ${shortId(jobId)} cancelled.` : `Job ${shortId(jobId)} had already ended (${answer.state}).`, "ok");
  } catch (err) {
    ctx.toast(`Cancel failed: ${errorText(err)}`, "error");
  }
}

// ------------------------------------------------------------------ the submit form

async function submitForm(ctx, onSubmitted) {
  const box = card("Submit a job");
  const field = (label, input, cls = "") => h("label.field", { class: cls }, h("span", label), input);
  const executable = h("input", { name: "executable", required: true, placeholder: "/bin/hostname", value: "/bin/hostname", autocomplete: "off" });
  const args = h("input", { name: "arguments", placeholder: "quoted as in a shell: -c 'echo hi; sleep 2'", autocomplete: "off" });
  const executor = h("select", { name: "executor" });
  const queueSelect = h("select", { name: "queue" }, h("option", { value: "" }, "(default)"));
  const queueText = h("input", { name: "queue", placeholder: "(default)", autocomplete: "off" });
  const accountSelect = h("select", { name: "account" }, h("option", { value: "" }, "(default)"));
  const accountText = h("input", { name: "account", placeholder: "(default)", autocomplete: "off" });
  const duration = h("input", { name: "duration", value: "00:10:00", placeholder: "HH:MM:SS or seconds", autocomplete: "off" });
  const nodes = h("input", { name: "nodes", type: "number", min: 1, value: 1 });
  const name = h("input", { name: "name", placeholder: "(optional)", autocomplete: "off" });
  const directory = h("input", { name: "directory", placeholder: "(the edge's default)", autocomplete: "off" });
  const queueField = field("Queue / partition", queueText);
  const accountField = field("Account", accountText);
  const customRows = h("div.kv-rows");
  const addCustom = (k = "", v = "") => {
    const key = h("input", { placeholder: "slurm.constraint", value: k, "aria-label": "Attribute name" });
    const value = h("input", { placeholder: "gpu", value: v, "aria-label": "Attribute value" });
    const row = h("div.kv-row", key, value, h("button.small.secondary", { type: "button", on: { click: () => row.remove() }, "aria-label": "Remove attribute" }, "Remove"));
    customRows.append(row);
  };
  const custom = h(
    "fieldset.field.wide",
    h("legend", "Custom attributes (passed to the batch system, e.g. slurm.constraint = gpu)"),
    customRows,
    h("button.small.secondary", { type: "button", on: { click: () => addCustom() } }, "Add attribute"),
  );
  const batchOnly = [queueField, accountField, nodes, custom];
  const status = h("p.form-status", { "aria-live": "polite" });
  const error = h("p.form-error", { role: "alert", hidden: true });
  const submit = h("button.primary", { type: "submit" }, "Submit job");
  const form = h(
    "form.plugin-form",
    { "aria-label": "Submit a job" },
    h(
      "div.form-grid",
      field("Executable", executable),
      field("Arguments", args, "wide-2"),
      field("Executor", executor),
      queueField,
      accountField,
      field("Duration", duration),
      field("Nodes", nodes),
      field("Name", name),
      field("Working directory", directory),
      custom,
    ),
    h("div.form-actions", submit, status, error),
  );
  box.body.append(form);

  const localHint = h("p.muted.hint-local", "The local executor runs the job on the edge's host: queue, account, nodes and custom attributes do not apply.");
  box.body.append(localHint);
  const syncExecutor = () => {
    const local = executor.value === "local";
    for (const el of batchOnly) el.classList.toggle("inactive", local);
    for (const input of [queueText, queueSelect, accountText, accountSelect, nodes]) input.disabled = local;
    localHint.hidden = !local;
  };
  executor.addEventListener("change", syncExecutor);

  // executors of this edge
  try {
    const ex = await ctx.api.get("executors");
    const names = ex.executors && ex.executors.length ? ex.executors : ["local"];
    executor.replaceChildren(...names.map((n) => h("option", { value: n, selected: n === ex.default }, n === ex.default ? `${n} (default)` : n)));
  } catch {
    executor.replaceChildren(h("option", { value: "local" }, "local"));
  }
  syncExecutor();

  // queues and accounts from queue_info on the same edge, when it runs there
  const qi = ctx.plugins().queue_info;
  if (qi && qi.enabled !== false) {
    const qapi = ctx.pluginApi("queue_info");
    qapi
      .sget("get_info")
      .then((info) => {
        const queues = Object.entries(info.queues || {});
        if (!queues.length) return;
        queueSelect.replaceChildren(
          h("option", { value: "" }, "(default)"),
          ...queues.map(([q, d]) =>
            h("option", { value: q }, `${q}${d.default ? " (default)" : ""}: ${d.nodes_idle ?? "?"} of ${d.nodes_total ?? "?"} nodes free, limit ${d.time_limit === "UNLIMITED" ? "none" : `${d.time_limit} min`}`),
          ),
        );
        queueField.replaceChildren(h("span", "Queue / partition"), queueSelect);
        syncExecutor();
      })
      .catch(() => {});
    qapi
      .sget("list_allocations")
      .then((a) => {
        const accounts = [...new Set((a.allocations || []).map((r) => r.account).filter(Boolean))].sort();
        if (!accounts.length) return;
        accountSelect.replaceChildren(h("option", { value: "" }, "(default)"), ...accounts.map((acc) => h("option", { value: acc }, acc)));
        accountField.replaceChildren(h("span", "Account"), accountSelect);
        syncExecutor();
      })
      .catch(() => {});
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    let argv;
    try {
      argv = splitArgs(args.value);
    } catch (err) {
      error.hidden = false;
      error.textContent = err.message;
      return;
    }
    const local = executor.value === "local";
    const attributes = {};
    if (duration.value.trim()) attributes.duration = duration.value.trim();
    const queue = (queueField.contains(queueSelect) ? queueSelect.value : queueText.value).trim();
    const account = (accountField.contains(accountSelect) ? accountSelect.value : accountText.value).trim();
    if (!local && queue) attributes.queue_name = queue;
    if (!local && account) attributes.account = account;
    if (!local && Number(nodes.value) > 0) attributes.node_count = Number(nodes.value);
    const customAttributes = {};
    if (!local) {
      for (const row of customRows.children) {
        const [k, v] = row.querySelectorAll("input");
        if (k.value.trim()) customAttributes[k.value.trim()] = v.value;
      }
    }
    const spec = { executable: executable.value.trim(), arguments: argv, attributes };
    if (name.value.trim()) spec.name = name.value.trim();
    if (directory.value.trim()) spec.directory = directory.value.trim();
    if (Object.keys(customAttributes).length) spec.custom_attributes = customAttributes;
    submit.disabled = true;
    status.textContent = "Submitting…";
    try {
      const answer = await ctx.api.spost("submit", "", { job_spec: spec, executor: executor.value });
      status.textContent = `Submitted ${shortId(answer.job_id)} (${answer.executor}, native id ${answer.native_id ?? "–"}).`;
      ctx.toast(`Job ${shortId(answer.job_id)} submitted.`, "ok");
      onSubmitted({ ...answer, row: { executable: spec.executable, arguments: argv, name: spec.name } });
      ctx.navigate("job", answer.job_id);
    } catch (err) {
      status.textContent = "";
      error.hidden = false;
      error.textContent = `The job was not submitted: ${errorText(err)}`;
    } finally {
      submit.disabled = false;
    }
  });
  return box.el;
}

// ------------------------------------------------------------------ one job: state and live output

async function renderJob(root, ctx, jobId) {
  const api = ctx.api;
  const stateBadge = badge("UNKNOWN");
  const info = facts();
  const history = h("ol.history");
  const panes = {};
  for (const stream of ["stdout", "stderr"]) {
    const pre = h("pre.output", { class: stream, "aria-label": stream, dataset: { stream } });
    const size = h("span.muted");
    panes[stream] = { pre, size, offset: 0, chars: 0 };
  }
  const cancel = h("button.danger", { type: "button", hidden: true, on: { click: () => cancelJob(ctx, jobId) } }, "Cancel job…");
  ctx.setActions([h("a", { href: ctx.href(), class: "button-link" }, "← All jobs"), cancel]);
  const head = card([h("span", "Job "), h("span.mono", jobId), " ", stateBadge]);
  head.body.append(info.el);
  const histCard = card("History");
  histCard.body.append(history);
  const out = card("Output");
  out.body.append(
    h("div.output-head", h("strong", "stdout"), panes.stdout.size),
    panes.stdout.pre,
    h("div.output-head", h("strong", "stderr"), panes.stderr.size),
    panes.stderr.pre,
  );
  const error = h("div");
  root.append(error, h("div.grid-2", head.el, histCard.el), out.el);

  let state = null;
  const historyItem = (e) =>
    h("li", badge(e.state || "UNKNOWN"), " ", h("span", fmtTime(e.time)), e.source ? h("span.muted", ` reported by ${e.source}`) : null);
  const showState = (s) => {
    state = s || state;
    setBadge(stateBadge, state);
    stateBadge.dataset.state = state || "";
    cancel.hidden = !state || FINAL_STATES.has(state);
  };

  const append = (stream, text, bytes) => {
    const pane = panes[stream];
    if (text) {
      const follow = pane.pre.scrollTop + pane.pre.clientHeight >= pane.pre.scrollHeight - 4;
      pane.pre.append(document.createTextNode(text));
      pane.chars += text.length;
      while (pane.chars > MAX_VIEW_CHARS && pane.pre.firstChild) {
        pane.chars -= pane.pre.firstChild.textContent.length;
        pane.pre.firstChild.remove();
      }
      if (follow) pane.pre.scrollTop = pane.pre.scrollHeight;
    }
    pane.offset = bytes;
    setText(pane.size, `${pane.offset} bytes`);
  };

  const showRecord = (s) => {
    info.set("Name", s.name || "–");
    info.set("Command", commandOf(s));
    info.set("Executor", s.executor);
    info.set("Native id", s.native_id ?? "–");
    info.set("Exit code", s.exit_code ?? "–");
    info.set("Message", s.message || "–");
    info.set("Submitted", fmtTime(s.submitted));
    info.set("Updated", fmtTime(s.updated ?? s.time));
    if (s.metadata && s.metadata.stdout_path) info.set("Output files", `${s.metadata.stdout_path}, ${s.metadata.stderr_path}`);
    if (Array.isArray(s.history)) {
      history.replaceChildren(...s.history.map(historyItem));
    }
    showState(s.state);
  };

  // one status read at a time; output events that come meanwhile wait and are replayed after it
  let reading = null;
  let waiting = [];
  const readStatus = async () => {
    if (reading) return reading;
    reading = (async () => {
      try {
        const s = await api.sget("status", encodeURIComponent(jobId), {
          stdout_offset: panes.stdout.offset,
          stderr_offset: panes.stderr.offset,
        });
        error.replaceChildren();
        showRecord(s);
        append("stdout", s.stdout, s.stdout_offset);
        append("stderr", s.stderr, s.stderr_offset);
      } catch (err) {
        error.replaceChildren(note(`Could not read job ${jobId}: ${errorText(err)}`, "error"));
      } finally {
        reading = null;
        const queued = waiting;
        waiting = [];
        queued.forEach(onOutput);
      }
    })();
    return reading;
  };

  const onOutput = (d) => {
    if (!d || String(d.job_id) !== jobId || !panes[d.stream]) return;
    if (reading) {
      waiting.push(d);
      return;
    }
    const pane = panes[d.stream];
    const size = Number(d.size ?? new TextEncoder().encode(d.data || "").length);
    const offset = Number(d.offset);
    if (offset === pane.offset) append(d.stream, d.data || "", offset + size);
    else if (offset + size <= pane.offset) return; // seen already
    else readStatus(); // a gap (skipped output, or events lost): read from where we are
  };

  ctx.on("job_output", onOutput);
  ctx.on("job_status", (d) => {
    if (!d || String(d.job_id) !== jobId) return;
    if (d.state !== state) {
      history.append(historyItem({ state: d.state, time: d.time, source: d.source }));
    }
    showState(d.state);
    if (d.time) info.set("Updated", fmtTime(d.time));
    if (d.exit_code !== undefined && d.exit_code !== null) info.set("Exit code", d.exit_code);
    if (d.message) info.set("Message", d.message);
    if (FINAL_STATES.has(d.state)) setTimeout(readStatus, 800); // the last output may come just after
    else readStatus();
  });
  ctx.onResync(readStatus);
  // a safety net while the job runs (a job submitted with stream_output: false sends no output events)
  ctx.every(5000, () => {
    if (!state || !FINAL_STATES.has(state)) readStatus();
  });
  await readStatus();
}
