// Portal module of the rhapsody plugin: the tasks of a session and their states, live from `task_status` and
// `task_status_batch`; submit programs as tasks; a task's output.  Sessions hold the tasks: the page opens
// one of the caller's sessions (also those a script made) or a new one, and never closes it on leaving
// (closing a rhapsody session cancels its tasks).

import {
  FINAL_STATES,
  KeyedTable,
  badge,
  card,
  errorText,
  facts,
  fmtDuration,
  fmtTime,
  h,
  note,
  setBadge,
  setText,
  splitArgs,
} from "/portal/dom.js";

export async function render(root, ctx) {
  const api = ctx.api;
  api.keepSession = true;
  const sessionSelect = h("select", { "aria-label": "Session" });
  const sessionState = badge("INITIALIZING");
  const newSession = h("button.secondary.small", { type: "button" }, "New session");
  const sessionCard = card("Session", { actions: [sessionSelect, sessionState, newSession] });
  const sessionInfo = facts();
  sessionCard.body.append(sessionInfo.el);

  const table = new KeyedTable({
    key: (t) => t.uid,
    compare: (a, b) => (a.submitted || 0) - (b.submitted || 0) || String(a.uid).localeCompare(String(b.uid), undefined, { numeric: true }),
    empty: "No tasks in this session yet.",
    onRowClick: (t) => showTask(t.uid),
    columns: [
      { key: "uid", label: "Task", cls: "mono" },
      { key: "state", label: "State", value: (t) => t.state || "UNKNOWN", render: (td, t, v) => (td.firstChild ? setBadge(td.firstChild, v) : td.append(badge(v))) },
      { key: "what", label: "Runs", cls: "mono wide", value: (t) => (t.kind === "function" ? t.function || "–" : [t.executable, ...(t.arguments || [])].filter(Boolean).join(" ") || "–") },
      { key: "backend", label: "Backend" },
      { key: "exit_code", label: "Exit", cls: "num" },
      { key: "took", label: "Took", cls: "num", value: (t) => (t.started && t.finished ? fmtDuration(t.finished - t.started) : t.started ? "running" : "–") },
      { key: "error", label: "Error", cls: "wide", value: (t) => (t.error ? String(t.error).split("\n")[0].slice(0, 160) : "") },
      {
        key: "actions",
        label: "",
        cls: "actions",
        value: (t) => (FINAL_STATES.has(t.state) ? "" : "live"),
        render: (td, t, v) => td.replaceChildren(v ? h("button.small.danger", { type: "button", on: { click: () => cancelTask(t.uid) } }, "Cancel") : ""),
      },
    ],
  });
  const counts = h("span.muted");
  const cancelAll = h("button.danger.small", { type: "button" }, "Cancel all…");
  const tasksCard = card("Tasks", { actions: [counts, cancelAll] });
  const tasksStatus = h("div");
  tasksCard.body.append(tasksStatus, table.el);
  const detail = h("div");

  // submit
  const executable = h("input", { name: "executable", value: "/bin/echo", required: true, autocomplete: "off" });
  const args = h("input", { name: "arguments", value: "hello from rhapsody", autocomplete: "off" });
  const copies = h("input", { name: "copies", type: "number", min: 1, max: 10000, value: 1 });
  const submitStatus = h("p.form-status", { "aria-live": "polite" });
  const submit = h("button.primary", { type: "submit" }, "Submit tasks");
  const form = h(
    "form.plugin-form",
    h(
      "div.form-grid",
      h("label.field", h("span", "Executable"), executable),
      h("label.field", h("span", "Arguments"), args),
      h("label.field", h("span", "Copies"), copies),
    ),
    h("div.form-actions", submit, submitStatus),
  );
  const submitCard = card("Submit tasks");
  submitCard.body.append(form);
  root.append(sessionCard.el, submitCard.el, tasksCard.el, detail);

  let sid = null;
  const updateCounts = () => {
    const by = {};
    for (const k of table.order) by[table.get(k).state] = (by[table.get(k).state] || 0) + 1;
    const parts = Object.entries(by).map(([s, n]) => `${n} ${String(s).toLowerCase()}`);
    setText(counts, `${table.size} task${table.size === 1 ? "" : "s"}${parts.length ? `: ${parts.join(", ")}` : ""}`);
  };

  async function waitReady() {
    for (let i = 0; i < 12; i += 1) {
      const s = await api.get(`session_status/${encodeURIComponent(sid)}`, { wait: 10 });
      setBadge(sessionState, String(s.status).toUpperCase());
      sessionInfo.set("Session", sid);
      sessionInfo.set("Backends", (s.backends || []).join(", ") || "–");
      if (s.error) sessionInfo.set("Error", s.error);
      if (s.status !== "initializing") return s.status === "ready";
    }
    return false;
  }

  async function loadTasks() {
    if (!sid) return;
    try {
      const answer = await api.get(`list_tasks/${encodeURIComponent(sid)}`);
      table.setAll(answer.tasks || []);
      tasksStatus.replaceChildren();
      updateCounts();
    } catch (err) {
      tasksStatus.replaceChildren(note(`Could not list the tasks: ${errorText(err)}`, "error"));
    }
  }

  async function use(newSid) {
    sid = newSid;
    api.adopt(sid);
    table.clear();
    detail.replaceChildren();
    setBadge(sessionState, "INITIALIZING");
    if (![...sessionSelect.options].some((o) => o.value === sid)) sessionSelect.append(h("option", { value: sid }, sid));
    sessionSelect.value = sid;
    try {
      if (await waitReady()) await loadTasks();
    } catch (err) {
      tasksStatus.replaceChildren(note(`This session cannot be used: ${errorText(err)}`, "error"));
    }
  }

  async function fresh() {
    const answer = await api.post("register_session", { ttl: 3600 });
    await use(answer.sid);
  }

  async function showTask(uid) {
    try {
      const t = await api.get(`task/${encodeURIComponent(sid)}/${encodeURIComponent(uid)}`);
      const box = card([h("span", "Task "), h("span.mono", String(uid)), " ", badge(t.state)]);
      const f = facts([
        ["Runs", t.kind === "function" ? t.function : [t.executable, ...(t.arguments || [])].join(" ")],
        ["Exit code", t.exit_code],
        ["Submitted", fmtTime(t.submitted)],
        ["Started", fmtTime(t.started)],
        ["Finished", fmtTime(t.finished)],
        ["Error", t.error || "–"],
      ]);
      box.body.append(f.el);
      if (t.return_value !== null && t.return_value !== undefined) box.body.append(h("h3", "Return value"), h("pre.json", typeof t.return_value === "string" ? t.return_value : JSON.stringify(t.return_value, null, 2)));
      // as text: a value that is not a string (a JSON object) must not reach h() as its props
      const text = (v) => (v === null || v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v));
      box.body.append(h("div.output-head", h("strong", "stdout")), h("pre.output", text(t.stdout)), h("div.output-head", h("strong", "stderr")), h("pre.output.stderr", text(t.stderr)));
      detail.replaceChildren(box.el);
      box.el.scrollIntoView({ block: "nearest" });
    } catch (err) {
      detail.replaceChildren(note(`Could not read task ${uid}: ${errorText(err)}`, "error"));
    }
  }

  async function cancelTask(uid) {
    if (!(await ctx.confirm({ title: `Cancel task ${uid}?`, body: "Its processes are stopped.", action: "Cancel task" }))) return;
    try {
      await api.post(`cancel/${encodeURIComponent(sid)}/${encodeURIComponent(uid)}`);
    } catch (err) {
      ctx.toast(`Cancel failed: ${errorText(err)}`, "error");
    }
  }

  cancelAll.addEventListener("click", async () => {
    if (!sid) return;
    const ok = await ctx.confirm({ title: "Cancel every task of this session?", body: "Every task that has not ended is stopped.", action: "Cancel all tasks" });
    if (!ok) return;
    try {
      const answer = await api.post(`cancel_all/${encodeURIComponent(sid)}`);
      ctx.toast(`${answer.cancelled} task(s) cancelled.`, "ok");
    } catch (err) {
      ctx.toast(`Cancel failed: ${errorText(err)}`, "error");
    }
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let argv;
    try {
      argv = splitArgs(args.value);
    } catch (err) {
      submitStatus.textContent = err.message;
      return;
    }
    const n = Math.max(1, Math.min(10000, Number(copies.value) || 1));
    const tasks = Array.from({ length: n }, () => ({ executable: executable.value.trim(), arguments: argv }));
    submit.disabled = true;
    submitStatus.textContent = "Submitting…";
    try {
      const answer = await api.post(`submit/${encodeURIComponent(sid)}`, { tasks });
      for (const t of answer) {
        if (!table.has(t.uid)) table.upsert({ uid: t.uid, state: t.state, kind: "executable", executable: executable.value.trim(), arguments: argv, submitted: Date.now() / 1000 });
      }
      updateCounts();
      submitStatus.textContent = `Submitted ${answer.length} task(s).`;
    } catch (err) {
      submitStatus.textContent = `Not submitted: ${errorText(err)}`;
    } finally {
      submit.disabled = false;
    }
  });

  let reloadTimer = null;
  const reloadSoon = () => {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(loadTasks, 1000);
  };
  const onChange = (t) => {
    if (!t || !t.uid) return;
    if (FINAL_STATES.has(t.state)) reloadSoon(); // the summary has the times and the backend
    if (table.has(t.uid)) table.upsert(t);
    else table.upsert({ ...t, submitted: t.submitted ?? Date.now() / 1000 });
  };
  ctx.on("task_status", (d) => {
    if (d && d.sid === sid) {
      onChange(d);
      updateCounts();
    }
  });
  ctx.on("task_status_batch", (d) => {
    if (d && d.sid === sid) {
      (d.tasks || []).forEach(onChange);
      updateCounts();
    }
  });
  ctx.on("session_status", (d) => {
    if (d && d.sid === sid) setBadge(sessionState, String(d.status).toUpperCase());
  });
  ctx.onResync(loadTasks);
  sessionSelect.addEventListener("change", () => use(sessionSelect.value));
  newSession.addEventListener("click", () => fresh().catch((err) => ctx.toast(errorText(err), "error")));

  try {
    const known = (await api.get("list_sessions")).sessions || [];
    sessionSelect.replaceChildren(...known.map((s) => h("option", { value: s }, s)));
    const current = api.sid && known.includes(api.sid) ? api.sid : known[known.length - 1];
    if (current) await use(current);
    else await fresh();
  } catch (err) {
    tasksStatus.replaceChildren(note(`No session: ${errorText(err)}`, "error"));
  }
}
