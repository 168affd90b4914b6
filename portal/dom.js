// DOM helpers of the Explorer.  One rule runs through all of it: data from the network becomes text
// (textContent, createTextNode, attribute values), never markup.  Nothing in portal/ parses HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.append(child);
    else el.append(document.createTextNode(String(child)));
  }
}

function apply(el, props) {
  if (!props) return el;
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "attrs") for (const [a, v] of Object.entries(value)) setAttr(el, a, v);
    else if (key === "hidden" || key === "disabled" || key === "checked" || key === "selected") el[key] = !!value;
    else if (key === "value") el.value = String(value);
    else setAttr(el, key, value);
  }
  return el;
}

/** attributes whose value is a URL the browser follows or loads */
const URL_ATTRS = new Set(["href", "xlink:href", "src", "action", "formaction", "poster", "data", "srcset", "ping"]);
/** a fragment (#/...) or a path of this origin: never a scheme (javascript:, data:), a host (//h) or /\\h */
const OWN_URL = /^(#|\/(?![\/\\]))/;

function setAttr(el, name, value) {
  // attribute names are ours (literals in this code); only their values may come from data.  A value that
  // would run script or leave the origin is refused whatever its source (defence in depth: the pages build
  // their links from encoded segments, and a string from the network that reaches h() as its props must
  // not become a link either).
  if (/^on/i.test(name)) throw new Error(`event handler attributes are not allowed: ${name}`);
  const lower = String(name).toLowerCase();
  if (lower === "style" || lower === "srcdoc") throw new Error(`the attribute ${name} is not allowed`);
  if (URL_ATTRS.has(lower) && value !== false && value !== null && value !== undefined) {
    if (!OWN_URL.test(String(value))) throw new Error(`not a link of this site: ${name}=${JSON.stringify(String(value))}`);
  }
  if (value === true) el.setAttribute(name, "");
  else if (value !== false && value !== null && value !== undefined) el.setAttribute(name, String(value));
}

/** h("tag.class1.class2", {props}, ...children): an element; strings become text nodes. */
export function h(spec, props, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  if (props && (typeof props !== "object" || props instanceof Node || Array.isArray(props))) {
    children.unshift(props);
    props = null;
  }
  if (props && "class" in props) {
    const extra = Array.isArray(props.class) ? props.class.filter(Boolean).join(" ") : props.class || "";
    props = { ...props, class: [...classes, extra].filter(Boolean).join(" ") || null };
  }
  apply(el, props);
  append(el, children);
  return el;
}

/** An SVG element with attributes. */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [a, v] of Object.entries(attrs || {})) setAttr(el, a, v);
  append(el, children);
  return el;
}

/** Set a node's text only when it changed (cheap for live updates). */
export function setText(el, text) {
  const s = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== s) el.textContent = s;
}

// ------------------------------------------------------------------ formatting

export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return "–";
  let v = Number(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return "–";
  let s = Math.max(0, Math.round(Number(seconds)));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const hh = Math.floor(s / 3600);
  s -= hh * 3600;
  const mm = Math.floor(s / 60);
  s -= mm * 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${String(mm).padStart(2, "0")}m`;
  if (mm) return `${mm}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

/** Unix seconds as local date and time ("–" for none). */
export function fmtTime(unix) {
  if (!unix && unix !== 0) return "–";
  const d = new Date(Number(unix) * 1000);
  if (Number.isNaN(d.getTime())) return String(unix);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return d.toDateString() === today.toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}

export function fmtValue(v) {
  if (v === null || v === undefined || v === "") return "–";
  if (Array.isArray(v)) return v.map((x) => (typeof x === "object" ? JSON.stringify(x) : String(x))).join(", ");
  if (typeof v === "object") return JSON.stringify(v);
  if (typeof v === "number" && !Number.isInteger(v)) return String(Math.round(v * 100) / 100);
  return String(v);
}

// ------------------------------------------------------------------ states: colour and text

/** The job/task states every plugin shares; the badge shows the word too (never colour alone). */
export const FINAL_STATES = new Set(["DONE", "FAILED", "CANCELLED"]);
const KNOWN = new Set(["PENDING", "RUNNING", "DONE", "FAILED", "CANCELLED", "HELD", "UNKNOWN"]);

export function stateClass(state) {
  const s = String(state || "UNKNOWN").toUpperCase();
  if (KNOWN.has(s)) return `state-${s.toLowerCase()}`;
  if (/^(UP|ACTIVE|READY|OK|CONNECTED|IDLE|OPEN)$/.test(s)) return "state-done";
  if (/^(DOWN|DRAIN|FAIL|ERROR|INACTIVE|CLOSED)/.test(s)) return "state-failed";
  if (/^(INITIALIZING|STARTING|PENDING)/.test(s)) return "state-pending";
  return "state-unknown";
}

export function badge(state) {
  const text = state === null || state === undefined || state === "" ? "UNKNOWN" : String(state);
  return h("span.badge", { class: stateClass(text), title: text }, text);
}

/** Update a badge made by badge() in place. */
export function setBadge(el, state) {
  const text = state === null || state === undefined || state === "" ? "UNKNOWN" : String(state);
  if (el.textContent === text) return;
  el.textContent = text;
  el.title = text;
  el.className = `badge ${stateClass(text)}`;
}

// ------------------------------------------------------------------ a keyed table, updated cell by cell

/**
 * A table whose rows are keyed: upsert(row) adds a row or changes only the cells whose value changed; nothing
 * is re-rendered as a whole.  columns: [{key, label, value(row) -> string, render?(cell, row, value), cls}].
 * compare(a, b) places new rows (existing rows keep their place).  Rows beyond pageSize wait behind a
 * "show more" button, so a table of thousands of rows stays quick.
 */
export class KeyedTable {
  constructor({ columns, key, compare = null, empty = "Nothing here.", onRowClick = null, pageSize = 500, caption }) {
    this.columns = columns.map((c) => ({ value: (row) => fmtValue(row[c.key]), ...c }));
    this.keyOf = key;
    this.compare = compare;
    this.onRowClick = onRowClick;
    this.pageSize = pageSize;
    this.limit = pageSize;
    this.rows = new Map(); // key -> {tr, cells: [td], values: [string], data}
    this.order = []; // keys, in display order
    const head = h(
      "tr",
      this.columns.map((c) => h("th", { scope: "col", class: c.cls }, c.label)),
    );
    this.tbody = h("tbody");
    this.table = h("table.data", caption ? h("caption", caption) : null, h("thead", head), this.tbody);
    this.emptyEl = h("p.empty", empty);
    this.more = h("button.link-button", { type: "button", hidden: true, on: { click: () => this.showMore() } });
    this.el = h("div.table-wrap", this.table, this.emptyEl, this.more);
    this.updateChrome();
  }

  get size() {
    return this.rows.size;
  }

  has(k) {
    return this.rows.has(k);
  }

  get(k) {
    const r = this.rows.get(k);
    return r ? r.data : undefined;
  }

  /** Add or update one row; returns "added", "changed" or "same". */
  upsert(data) {
    const k = this.keyOf(data);
    const existing = this.rows.get(k);
    if (existing) {
      const merged = { ...existing.data, ...data };
      existing.data = merged;
      let changed = false;
      this.columns.forEach((c, i) => {
        const v = c.value(merged);
        if (v !== existing.values[i]) {
          existing.values[i] = v;
          this.fill(existing.cells[i], c, merged, v);
          changed = true;
        }
      });
      return changed ? "changed" : "same";
    }
    const cells = [];
    const values = [];
    const tr = h("tr", { dataset: { key: String(k) } });
    this.columns.forEach((c) => {
      const v = c.value(data);
      const td = h("td", { class: c.cls });
      this.fill(td, c, data, v);
      cells.push(td);
      values.push(v);
      tr.append(td);
    });
    if (this.onRowClick) {
      tr.classList.add("clickable");
      tr.tabIndex = 0;
      tr.addEventListener("click", (ev) => {
        if (ev.target.closest("button, a, input, select")) return;
        this.onRowClick(this.rows.get(k).data, ev);
      });
      tr.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" && ev.target === tr) this.onRowClick(this.rows.get(k).data, ev);
      });
    }
    const entry = { tr, cells, values, data };
    this.rows.set(k, entry);
    let index = this.order.length;
    if (this.compare) {
      // binary search for the place of the new row
      let lo = 0;
      let hi = this.order.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (this.compare(this.rows.get(this.order[mid]).data, data) <= 0) lo = mid + 1;
        else hi = mid;
      }
      index = lo;
    }
    this.order.splice(index, 0, k);
    if (index < this.limit) {
      const next = this.order[index + 1];
      const nextTr = next !== undefined ? this.rows.get(next).tr : null;
      if (nextTr && nextTr.parentNode === this.tbody) this.tbody.insertBefore(tr, nextTr);
      else this.tbody.append(tr);
      // one row past the page goes behind "show more"
      if (this.order.length > this.limit) {
        const last = this.rows.get(this.order[this.limit]).tr;
        if (last.parentNode === this.tbody) last.remove();
      }
    }
    this.updateChrome();
    return "added";
  }

  fill(td, column, row, value) {
    if (column.render) column.render(td, row, value);
    else setText(td, value);
  }

  remove(k) {
    const entry = this.rows.get(k);
    if (!entry) return;
    entry.tr.remove();
    this.rows.delete(k);
    const i = this.order.indexOf(k);
    if (i >= 0) this.order.splice(i, 1);
    if (this.order.length >= this.limit) {
      const tr = this.rows.get(this.order[this.limit - 1]).tr;
      if (tr.parentNode !== this.tbody) this.tbody.append(tr);
    }
    this.updateChrome();
  }

  /** Make the table hold exactly these rows (changed cells only). */
  setAll(list) {
    const keep = new Set();
    for (const row of list) {
      keep.add(this.keyOf(row));
      this.upsert(row);
    }
    for (const k of [...this.rows.keys()]) if (!keep.has(k)) this.remove(k);
  }

  clear() {
    for (const k of [...this.rows.keys()]) this.remove(k);
  }

  showMore() {
    const from = this.limit;
    this.limit += this.pageSize;
    const frag = document.createDocumentFragment();
    for (const k of this.order.slice(from, this.limit)) frag.append(this.rows.get(k).tr);
    this.tbody.append(frag);
    this.updateChrome();
  }

  updateChrome() {
    const n = this.order.length;
    this.emptyEl.hidden = n > 0;
    this.table.hidden = n === 0;
    const hidden = n - Math.min(n, this.limit);
    this.more.hidden = hidden <= 0;
    if (hidden > 0) setText(this.more, `Show ${Math.min(hidden, this.pageSize)} more (${hidden} not shown)`);
  }
}

// ------------------------------------------------------------------ small widgets

/** A card: a titled section.  Returns {el, body, actions}. */
export function card(title, { actions = [], cls = "" } = {}) {
  const actionsEl = h("div.card-actions", actions);
  const body = h("div.card-body");
  const el = h("section.card", { class: cls }, h("header.card-head", h("h2", title), actionsEl), body);
  return { el, body, actions: actionsEl };
}

/** A definition list of [label, value] pairs; returns {el, set(label, value)}. */
export function facts(pairs = []) {
  const el = h("dl.facts");
  const byLabel = new Map();
  const set = (label, value) => {
    let dd = byLabel.get(label);
    if (!dd) {
      dd = h("dd");
      byLabel.set(label, dd);
      el.append(h("dt", label), dd);
    }
    if (value instanceof Node) dd.replaceChildren(value);
    else setText(dd, fmtValue(value));
  };
  for (const [label, value] of pairs) set(label, value);
  return { el, set };
}

/** A bar showing a percentage, with the number as text. */
export function meter(percent, label = "") {
  const fill = h("span.meter-fill");
  const text = h("span.meter-text");
  const el = h("span.meter", { role: "meter", "aria-valuemin": 0, "aria-valuemax": 100 }, fill, text);
  const set = (p, l = "") => {
    const v = Math.max(0, Math.min(100, Number(p) || 0));
    fill.style.width = `${v}%`; // CSSOM, not a style attribute: allowed by the CSP
    fill.classList.toggle("high", v >= 90);
    fill.classList.toggle("mid", v >= 70 && v < 90);
    el.setAttribute("aria-valuenow", String(Math.round(v)));
    setText(text, l || `${Math.round(v)}%`);
  };
  set(percent, label);
  return { el, set };
}

/** A message line: kind "error", "info", "warn". */
export function note(text, kind = "info") {
  return h("p.note", { class: `note-${kind}`, role: kind === "error" ? "alert" : null }, text);
}

/** Split a command line the way a shell would split words (quotes and backslashes; no expansion). */
export function splitArgs(line) {
  const out = [];
  let cur = "";
  let inWord = false;
  let quote = null;
  for (let i = 0; i < line.length; i += 1) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === "\\" && quote === '"' && i + 1 < line.length && '"\\$`'.includes(line[i + 1])) cur += line[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === "\\" && i + 1 < line.length) {
      cur += line[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) out.push(cur);
      cur = "";
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (quote) throw new Error(`unclosed ${quote} in the arguments`);
  if (inWord) out.push(cur);
  return out;
}

// ------------------------------------------------------------------ confirmation and toasts

/** A modal confirmation; resolves true only when the user presses the action button. */
export function confirmDialog({ title, body, action = "Confirm", danger = true }) {
  return new Promise((resolve) => {
    const ok = h("button", { type: "button", class: danger ? "danger" : "primary", value: "ok" }, action);
    const cancel = h("button", { type: "button", class: "secondary", value: "cancel" }, "Cancel");
    const id = `confirm-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
    const dialog = h(
      "dialog.confirm",
      { "aria-labelledby": id },
      h("h2", { id }, title),
      Array.isArray(body) ? body.map((p) => h("p", p)) : h("p", body),
      h("div.dialog-actions", cancel, ok),
    );
    const done = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    ok.addEventListener("click", () => done(true));
    cancel.addEventListener("click", () => done(false));
    dialog.addEventListener("cancel", (ev) => {
      ev.preventDefault();
      done(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

export function toast(message, kind = "info", ms = 5000) {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div.toasts", { id: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  const el = h("div.toast", { class: `toast-${kind}` }, message);
  box.append(el);
  setTimeout(() => el.remove(), ms);
  return el;
}

/** Describe an error for a person (ApiError carries the bridge's or plugin's detail). */
export function errorText(err) {
  if (!err) return "unknown error";
  if (err.status) return `${err.status}: ${err.detail || err.message}`;
  return err.message || String(err);
}
