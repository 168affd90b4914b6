// Portal module of the staging plugin: browse directories within the edge's staging roots, upload files
// (drag and drop or a file picker, streamed with progress: PUT upload/{sid}?path=&size=) and download them
// (GET file/{sid}?path=, a plain same-origin link: the browser streams it to disk).

import { KeyedTable, card, errorText, fmtBytes, fmtTime, h, note, setText } from "/portal/dom.js";
import { fileIconNode } from "/portal/icons.js";

const TYPE_ORDER = new Map([["dir", 0], ["symlink", 1], ["file", 2]]);

export async function render(root, ctx) {
  const api = ctx.api;
  let current = null;
  let roots = [];
  let home = "~";

  const pathInput = h("input", { type: "text", "aria-label": "Directory", spellcheck: "false", autocomplete: "off" });
  const crumbs = h("div.path-crumbs", { "aria-label": "Path" });
  const up = h("button.secondary.small", { type: "button", title: "The directory above" }, "Up");
  const rootButtons = h("div.toolbar");
  const listStatus = h("div");
  const meta = h("span.muted");

  const joinPath = (dir, name) => (dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`);
  const parentOf = (p) => {
    const trimmed = p.replace(/\/+$/, "");
    const i = trimmed.lastIndexOf("/");
    return i <= 0 ? "/" : trimmed.slice(0, i);
  };
  const fileUrl = (sid, path) => api.path(`file/${encodeURIComponent(sid)}?path=${encodeURIComponent(path)}`);

  const table = new KeyedTable({
    key: (e) => e.name,
    compare: (a, b) =>
      (TYPE_ORDER.get(a.type) ?? 3) - (TYPE_ORDER.get(b.type) ?? 3) || a.name.localeCompare(b.name, undefined, { numeric: true }),
    empty: "This directory is empty.",
    columns: [
      {
        key: "name",
        label: "Name",
        cls: "wide",
        value: (e) => `${e.type}\u0000${e.name}\u0000${e.sid}`,
        render: (td, e) => {
          const icon = h("span.file-icon", fileIconNode(e.type));
          const label =
            e.type === "dir"
              ? h("a", { href: "#", on: { click: (ev) => (ev.preventDefault(), open(joinPath(current, e.name))) } }, e.name)
              : e.type === "file"
                ? h("a", { href: fileUrl(e.sid, joinPath(current, e.name)), download: e.name, title: `Download ${e.name}` }, e.name)
                : h("span", e.name);
          td.replaceChildren(h("span.file-name", icon, label));
        },
      },
      { key: "type", label: "Type" },
      { key: "size", label: "Size", cls: "num", value: (e) => (e.type === "dir" ? "–" : fmtBytes(e.size)) },
      { key: "mtime", label: "Modified", cls: "nowrap", value: (e) => fmtTime(e.mtime) },
      {
        key: "actions",
        label: "",
        cls: "actions",
        value: (e) => `${e.type}\u0000${e.sid}`,
        render: (td, e) =>
          td.replaceChildren(
            e.type === "file"
              ? h("a.small-link", { href: fileUrl(e.sid, joinPath(current, e.name)), download: e.name }, "Download")
              : "",
            " ",
            h("button.small.danger", { type: "button", on: { click: () => remove(e) } }, "Delete"),
          ),
      },
    ],
  });

  // ------------------------------------------------------------ upload

  const fileInput = h("input", { type: "file", multiple: true, hidden: true });
  const pick = h("button.secondary", { type: "button", on: { click: () => fileInput.click() } }, "Choose files…");
  const overwrite = h("input", { type: "checkbox" });
  const uploads = h("div.uploads", { "aria-live": "polite" });
  const drop = h(
    "div.dropzone",
    { tabindex: 0, role: "button", "aria-label": "Drop files here to upload them" },
    h("p", "Drop files here to upload them into this directory, or "),
    pick,
    h("p", h("label.inline-check", overwrite, "replace files that exist")),
  );
  fileInput.addEventListener("change", () => {
    uploadAll([...fileInput.files]);
    fileInput.value = "";
  });
  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    ev.dataTransfer.dropEffect = "copy";
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    const files = [...((ev.dataTransfer && ev.dataTransfer.files) || [])];
    if (files.length) uploadAll(files);
  });
  drop.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      fileInput.click();
    }
  });

  function upload(file, dir, replace) {
    // XMLHttpRequest: fetch() reports no upload progress
    return new Promise((resolve, reject) => {
      api.session().then((sid) => {
        const target = joinPath(dir, file.name);
        const query = `path=${encodeURIComponent(target)}&size=${file.size}&overwrite=${replace ? "true" : "false"}`;
        const xhr = new XMLHttpRequest();
        xhr.open("PUT", api.path(`upload/${encodeURIComponent(sid)}?${query}`));
        xhr.withCredentials = true;
        xhr.setRequestHeader("content-type", "application/octet-stream");
        xhr.upload.onprogress = (ev) => file.onProgress && file.onProgress(ev.loaded, ev.lengthComputable ? ev.total : file.size);
        xhr.onload = () => {
          let body = null;
          try {
            body = JSON.parse(xhr.responseText);
          } catch {
            body = null;
          }
          if (xhr.status >= 200 && xhr.status < 300) resolve(body);
          else reject(Object.assign(new Error((body && body.detail) || xhr.statusText), { status: xhr.status, detail: body && body.detail }));
        };
        xhr.onerror = () => reject(Object.assign(new Error("the upload was cut"), { status: 0, detail: "the upload was cut" }));
        xhr.send(file);
      }, reject);
    });
  }

  async function uploadAll(files) {
    const dir = current;
    for (const file of files) {
      const bar = h("progress", { max: Math.max(1, file.size), value: 0 });
      const state = h("span.muted", "waiting");
      const row = h("div.upload-row", { dataset: { file: file.name } }, h("span.name", { title: file.name }, `${file.name} (${fmtBytes(file.size)})`), bar, state);
      uploads.prepend(row);
      file.onProgress = (loaded, total) => {
        bar.max = Math.max(1, total);
        bar.value = loaded;
        setText(state, `${Math.round((100 * loaded) / Math.max(1, total))}%`);
      };
      setText(state, "0%");
      try {
        let answer;
        try {
          answer = await upload(file, dir, overwrite.checked);
        } catch (err) {
          if (err.status !== 409) throw err;
          const again = await ctx.confirm({
            title: `Replace ${file.name}?`,
            body: `${joinPath(dir, file.name)} exists on ${ctx.edge}. Replace it with the file you chose?`,
            action: "Replace",
          });
          if (!again) {
            setText(state, "skipped: exists");
            continue;
          }
          answer = await upload(file, dir, true);
        }
        bar.value = bar.max;
        setText(state, `done (${fmtBytes(answer && answer.size)})`);
        row.classList.add("done");
      } catch (err) {
        setText(state, `failed: ${errorText(err)}`);
        row.classList.add("failed");
      }
      if (dir === current) list(current);
    }
  }

  // ------------------------------------------------------------ listing and navigation

  async function list(path) {
    try {
      const answer = await api.withSession(async (sid) => ({ ...(await api.get(`list/${encodeURIComponent(sid)}`, { path })), sid }));
      const dir = typeof answer.path === "string" && answer.path ? answer.path : String(path);
      const changedDir = dir !== current;
      current = dir;
      if (changedDir) table.clear();
      pathInput.value = current;
      // the edge's entries as text: a name or a type that is not a string (a hostile edge's JSON object)
      // must not reach h() as its props, nor a lookup table as a key
      const entries = (Array.isArray(answer.entries) ? answer.entries : [])
        .filter((e) => e && typeof e === "object")
        .map((e) => ({ ...e, name: String(e.name ?? ""), type: typeof e.type === "string" ? e.type : "other", sid: answer.sid }));
      table.setAll(entries);
      setText(meta, `${entries.length} entries${answer.truncated ? " (the listing was cut)" : ""}`);
      renderCrumbs();
      listStatus.replaceChildren();
      return true;
    } catch (err) {
      listStatus.replaceChildren(note(`Cannot list ${path}: ${errorText(err)}`, "error"));
      return false;
    }
  }

  async function open(path) {
    await list(path);
  }

  function renderCrumbs() {
    const parts = current.split("/").filter(Boolean);
    const nodes = [h("button", { type: "button", on: { click: () => open("/") } }, "/")];
    parts.forEach((part, i) => {
      const target = `/${parts.slice(0, i + 1).join("/")}`;
      nodes.push(h("button", { type: "button", on: { click: () => open(target) } }, part));
      if (i < parts.length - 1) nodes.push(h("span.muted", "/"));
    });
    crumbs.replaceChildren(...nodes);
  }

  async function remove(entry) {
    const path = joinPath(current, entry.name);
    const dir = entry.type === "dir";
    const ok = await ctx.confirm({
      title: `Delete ${entry.name}?`,
      body: dir ? `${path} and everything in it are deleted on ${ctx.edge}.` : `${path} is deleted on ${ctx.edge}.`,
      action: "Delete",
    });
    if (!ok) return;
    try {
      await api.withSession((sid) => api.post(`delete/${encodeURIComponent(sid)}?path=${encodeURIComponent(path)}${dir ? "&recursive=true" : ""}`));
      table.remove(entry.name);
      ctx.toast(`${entry.name} deleted.`, "ok");
    } catch (err) {
      ctx.toast(`Delete failed: ${errorText(err)}`, "error");
    }
  }

  const newDirName = h("input", { type: "text", placeholder: "new-folder", "aria-label": "New folder name", autocomplete: "off" });
  const mkdir = h("form.toolbar", newDirName, h("button.secondary.small", { type: "submit" }, "New folder"));
  mkdir.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = newDirName.value.trim();
    if (!name) return;
    try {
      await api.withSession((sid) => api.post(`mkdir/${encodeURIComponent(sid)}?path=${encodeURIComponent(joinPath(current, name))}`));
      newDirName.value = "";
      list(current);
    } catch (err) {
      ctx.toast(`New folder failed: ${errorText(err)}`, "error");
    }
  });

  const go = h("form.path-bar", up, pathInput, h("button.secondary.small", { type: "submit" }, "Go"));
  go.addEventListener("submit", (ev) => {
    ev.preventDefault();
    open(pathInput.value.trim() || home);
  });
  up.addEventListener("click", () => current && open(parentOf(current)));

  const browse = card("Files", { actions: [meta] });
  browse.body.append(h("div.toolbar", h("span.muted", "Roots:"), rootButtons), go, crumbs, listStatus, table.el, mkdir);
  const send = card("Upload");
  send.body.append(drop, fileInput, uploads);
  root.append(browse.el, send.el);
  ctx.setActions([h("button.secondary", { type: "button", on: { click: () => current && list(current) } }, "Refresh")]);

  try {
    const r = await api.get("roots");
    roots = r.roots || [];
    home = r.home || "~";
    rootButtons.replaceChildren(...roots.map((p) => h("button.small.secondary", { type: "button", on: { click: () => open(p) } }, p)));
  } catch (err) {
    rootButtons.replaceChildren(h("span.muted", `unknown (${errorText(err)})`));
  }
  if (!(await list(home))) if (roots.length) await list(roots[0]);
}
