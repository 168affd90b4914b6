// A plugin page built from the plugin's ui_config (for plugins that ship no portal module):
// forms post their fields as JSON, monitors load a route and show the answer as tables or facts,
// and the plugin's notification topic updates keyed rows live.

import { KeyedTable, badge, card, errorText, facts, fmtValue, h, note, setBadge, toast } from "./dom.js";

const STATE_KEYS = new Set(["state", "status"]);
const ID_KEYS = ["job_id", "uid", "id", "name", "sid"];

function fillPath(template, sid) {
  return String(template).replaceAll("{sid}", encodeURIComponent(sid || ""));
}

/** The list inside an answer: the answer itself, or the one array/object-of-objects it wraps. */
function unwrap(value) {
  if (Array.isArray(value)) return value;
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && value[keys[0]] && typeof value[keys[0]] === "object") return unwrap(value[keys[0]]);
    const all = Object.values(value);
    if (all.length && all.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
      return Object.entries(value).map(([name, v]) => ({ name, ...v }));
    }
  }
  return value;
}

function tableFor(rows, { idField, emptyText }) {
  const keys = [];
  for (const row of rows.slice(0, 50)) for (const k of Object.keys(row)) if (!keys.includes(k)) keys.push(k);
  const shown = keys.slice(0, 10);
  const id = idField && keys.includes(idField) ? idField : ID_KEYS.find((k) => keys.includes(k));
  const columns = shown.map((k) =>
    STATE_KEYS.has(k)
      ? {
          key: k,
          label: k,
          render: (td, row, v) => {
            if (!td.firstChild) td.append(badge(v));
            else setBadge(td.firstChild, v);
          },
        }
      : { key: k, label: k },
  );
  let counter = 0;
  const table = new KeyedTable({
    columns,
    key: id ? (row) => String(row[id]) : (row) => row.__index ?? (row.__index = counter++),
    empty: emptyText || "Nothing here.",
  });
  table.setAll(rows);
  table.idField = id;
  return table;
}

function renderAnswer(container, answer, monitor) {
  const value = unwrap(answer);
  if (Array.isArray(value) && value.every((r) => r && typeof r === "object" && !Array.isArray(r))) {
    const table = tableFor(value, { idField: monitor.id_field, emptyText: monitor.empty_text });
    container.replaceChildren(table.el);
    return table;
  }
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const simple = Object.entries(value).filter(([, v]) => v === null || typeof v !== "object" || Array.isArray(v));
    const nested = Object.entries(value).filter(([, v]) => v !== null && typeof v === "object" && !Array.isArray(v));
    const f = facts(simple.map(([k, v]) => [k, fmtValue(v)]));
    container.replaceChildren(f.el, ...nested.map(([k, v]) => h("details", h("summary", k), h("pre.json", JSON.stringify(v, null, 2)))));
    return null;
  }
  container.replaceChildren(h("pre.json", typeof value === "string" ? value : JSON.stringify(value, null, 2)));
  return null;
}

export async function renderGeneric(root, ctx) {
  const ui = ctx.ui || {};
  const monitors = Array.isArray(ui.monitors) ? [...ui.monitors] : [];
  if (!monitors.length && typeof ui.auto_load === "string") monitors.push({ id: "main", title: "Data", auto_load: ui.auto_load });
  const needsSession = JSON.stringify(ui).includes("{sid}");
  const loaders = [];

  if (ui.description && typeof ui.description === "string") root.append(h("p.lead", ui.description));

  for (const form of Array.isArray(ui.forms) ? ui.forms : []) {
    root.append(buildForm(form, ctx, needsSession, () => loaders.forEach((l) => l())));
  }

  for (const monitor of monitors) {
    if (!monitor || typeof monitor.auto_load !== "string") continue;
    const box = card(typeof monitor.title === "string" ? monitor.title : "Data");
    const body = box.body;
    let table = null;
    const load = async () => {
      try {
        const answer = needsSession
          ? await ctx.api.withSession((s) => ctx.api.get(fillPath(monitor.auto_load, s)))
          : await ctx.api.get(fillPath(monitor.auto_load, ""));
        table = renderAnswer(body, answer, monitor);
      } catch (err) {
        body.replaceChildren(note(`Could not load ${monitor.auto_load}: ${errorText(err)}`, "error"));
      }
    };
    loaders.push(load);
    box.el.dataset.monitor = String(monitor.id || "");
    root.append(box.el);
    body.append(note("Loading…"));
    load();
    const spec = ui.notifications;
    if (spec && typeof spec.topic === "string") {
      let timer = null;
      ctx.on(spec.topic, (data) => {
        const id = data && spec.id_field ? data[spec.id_field] : undefined;
        if (table && id !== undefined && table.has(String(id)) && spec.state_field) {
          table.upsert({ [table.idField]: String(id), [spec.state_field]: data[spec.state_field] });
          return;
        }
        clearTimeout(timer);
        timer = setTimeout(load, 500);
      });
    }
  }

  if (ui.refresh_button && loaders.length) {
    ctx.setActions([h("button.secondary", { type: "button", on: { click: () => loaders.forEach((l) => l()) } }, "Refresh")]);
  }
  if (!monitors.length && !(ui.forms || []).length) {
    root.append(note("This plugin describes no page. Its routes are listed in its OpenAPI document."));
    const link = h("a", { href: ctx.api.path("docs"), target: "_blank", rel: "noopener noreferrer" }, "Open the API docs");
    root.append(h("p", link));
  }
}

function buildForm(form, ctx, needsSession, reload) {
  const box = card(typeof form.title === "string" ? form.title : "Form");
  const inputs = [];
  const fields = h("div.form-grid");
  for (const field of Array.isArray(form.fields) ? form.fields : []) {
    if (!field || typeof field.name !== "string") continue;
    const type = field.type === "number" ? "number" : field.type === "checkbox" ? "checkbox" : "text";
    const input = h("input", { type, name: field.name, value: field.default ?? "" });
    if (type === "checkbox") input.checked = !!field.default;
    inputs.push([field, input]);
    fields.append(h("label.field", h("span", typeof field.label === "string" ? field.label : field.name), input));
  }
  const status = h("p.form-status", { "aria-live": "polite" });
  const submit = form.submit || {};
  const button = h("button.primary", { type: "submit" }, typeof submit.label === "string" ? submit.label : "Submit");
  const el = h("form.plugin-form", fields, h("div.form-actions", button, status));
  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (typeof submit.endpoint !== "string") return;
    const body = {};
    for (const [field, input] of inputs) {
      if (input.type === "checkbox") body[field.name] = input.checked;
      else if (input.type === "number") body[field.name] = input.value === "" ? null : Number(input.value);
      else body[field.name] = input.value;
    }
    button.disabled = true;
    status.textContent = "Sending…";
    try {
      const answer = needsSession
        ? await ctx.api.withSession((s) => ctx.api.post(fillPath(submit.endpoint, s), body))
        : await ctx.api.post(fillPath(submit.endpoint, ""), body);
      status.textContent = "Done.";
      toast(`${form.title || "Form"}: ${fmtValue(answer).slice(0, 200)}`, "ok");
      reload();
    } catch (err) {
      status.textContent = errorText(err);
    } finally {
      button.disabled = false;
    }
  });
  box.body.append(el);
  return box.el;
}
