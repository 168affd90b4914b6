// The tree of edges in the sidebar.  Dotted names nest under the nearest edge whose name is a prefix
// (`edge.1` under `edge`).  Each edge is one keyed node: a change of one edge touches that node only.

import { h, setText } from "./dom.js";
import { pluginIconNode } from "./icons.js";

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

export function pluginTitle(name, info) {
  const ui = (info && info.ui_config) || {};
  return typeof ui.title === "string" && ui.title ? ui.title : name;
}

/** The plugin's icon (an SVG node). */
export function pluginIcon(name, info) {
  return pluginIconNode((info && info.type) || name, pluginTitle(name, info));
}

export const hrefEdge = (edge) => `#/e/${encodeURIComponent(edge)}`;
export const hrefPlugin = (edge, plugin) => `#/e/${encodeURIComponent(edge)}/${encodeURIComponent(plugin)}`;

export class EdgeTree {
  constructor() {
    this.nodes = new Map(); // name -> node
    this.selected = null;
    this.autoExpanded = false; // the first topology unfolds a small site (setAll)
    this.selectedPlugin = null;
    this.filterText = "";
    this.root = h("ul.tree", { role: "tree", "aria-label": "Edges" });
    this.filter = h("input.tree-filter", {
      type: "search",
      placeholder: "Filter edges",
      "aria-label": "Filter edges",
      on: { input: () => this.applyFilter(this.filter.value) },
    });
    this.summary = h("p.tree-summary", { "aria-live": "polite" });
    this.emptyEl = h("p.empty", "No edges are known to the bridge yet. Start one with radical-edge-service.");
    this.el = h("nav.edge-tree", { "aria-label": "Edges" }, h("div.tree-tools", this.filter), this.summary, this.root, this.emptyEl);
    this.updateSummary();
  }

  // ---------------------------------------------------------------- the view of the topology

  /** Make the tree show exactly these edges ({name: state}); only what differs is touched. */
  setAll(edges) {
    const names = new Set(Object.keys(edges || {}));
    for (const name of [...this.nodes.keys()]) if (!names.has(name)) this.remove(name, false);
    const sorted = [...names].sort((a, b) => a.length - b.length || collator.compare(a, b));
    for (const name of sorted) this.upsert(name, edges[name], false);
    this.updateSummary();
    if (!this.autoExpanded && this.nodes.size) {
      // a first look at a small site (the demo: one edge) shows the plugins at once; a big one stays folded
      this.autoExpanded = true;
      const top = [...this.nodes.values()].filter((node) => this.parentOf(node.name) === null);
      if (top.length <= 3) for (const node of top) this.toggle(node.name, true);
    }
  }

  upsert(name, state, summary = true) {
    let node = this.nodes.get(name);
    if (!node) {
      node = this.create(name);
      this.nodes.set(name, node);
      this.place(node);
      // edges that were waiting under a shorter prefix move under this one
      for (const other of this.nodes.values()) {
        if (other !== node && other.name.startsWith(`${name}.`) && this.parentOf(other.name) === name) this.place(other);
      }
      if (this.filterText) this.applyFilter(this.filterText);
    }
    this.update(node, state || {});
    if (summary) this.updateSummary();
    return node;
  }

  remove(name, summary = true) {
    const node = this.nodes.get(name);
    if (!node) return;
    this.nodes.delete(name);
    node.li.remove();
    for (const other of this.nodes.values()) if (other.parent === name) this.place(other);
    if (this.selected === name) this.selected = null;
    if (summary) this.updateSummary();
  }

  get(name) {
    return this.nodes.get(name);
  }

  // ---------------------------------------------------------------- nodes

  parentOf(name) {
    const labels = name.split(".");
    for (let i = labels.length - 1; i > 0; i -= 1) {
      const candidate = labels.slice(0, i).join(".");
      if (this.nodes.has(candidate)) return candidate;
    }
    return null;
  }

  create(name) {
    const dot = h("span.dot", { "aria-hidden": "true" });
    const prefix = h("span.edge-prefix");
    const leaf = h("span.edge-leaf");
    const link = h("a.edge-link", { href: `#/e/${encodeURIComponent(name)}`, title: name }, prefix, leaf);
    const stateText = h("span.edge-state");
    const count = h("span.edge-count");
    const caret = h("button.caret", {
      type: "button",
      "aria-label": `Show the plugins of ${name}`,
      "aria-expanded": "false",
      on: { click: () => this.toggle(name) },
    });
    const row = h("div.edge-row", caret, dot, link, stateText, count);
    const plugins = h("ul.plugin-list", { hidden: true, role: "group" });
    const children = h("ul.children", { role: "group" });
    const li = h("li.edge", { role: "treeitem", dataset: { edge: name } }, row, plugins, children);
    return { name, li, row, dot, link, prefix, leaf, stateText, count, caret, plugins, children, parent: undefined, key: "", expanded: false };
  }

  /** Put a node under its parent (or the root), in name order. */
  place(node) {
    const parent = this.parentOf(node.name);
    const container = parent === null ? this.root : this.nodes.get(parent).children;
    node.parent = parent;
    const shown = parent === null ? "" : `${parent}.`;
    setText(node.prefix, shown);
    setText(node.leaf, node.name.slice(shown.length));
    node.prefix.hidden = !shown;
    node.li.classList.toggle("nested", parent !== null);
    let before = null;
    for (const sibling of container.children) {
      if (sibling !== node.li && collator.compare(sibling.dataset.edge, node.name) > 0) {
        before = sibling;
        break;
      }
    }
    if (node.li.parentNode !== container || node.li.nextSibling !== before) container.insertBefore(node.li, before);
  }

  update(node, state) {
    const endpoint = state.endpoint || {};
    const connected = !!endpoint.connected;
    const plugins = state.plugins || {};
    const names = Object.keys(plugins).sort(collator.compare);
    node.state = state;
    node.li.classList.toggle("is-connected", connected);
    node.li.classList.toggle("is-disconnected", !connected);
    setText(node.stateText, connected ? "connected" : "disconnected");
    setText(node.count, `${names.length} plugin${names.length === 1 ? "" : "s"}`);
    node.row.title = `${node.name}: ${connected ? "connected" : "disconnected"}`;
    // the plugin list is rebuilt only when the plugins themselves changed
    const key = JSON.stringify(names.map((n) => [n, plugins[n].enabled, pluginTitle(n, plugins[n])]));
    if (key !== node.key) {
      node.key = key;
      node.plugins.replaceChildren(
        ...names.map((p) => {
          const info = plugins[p];
          return h(
            "li",
            { dataset: { plugin: p } },
            h(
              "a.plugin-link",
              { href: hrefPlugin(node.name, p), class: info.enabled === false ? "disabled" : "" },
              h("span.plugin-icon", pluginIcon(p, info)),
              h("span", pluginTitle(p, info)),
            ),
          );
        }),
      );
      this.markPlugin(node);
    }
  }

  toggle(name, open) {
    const node = this.nodes.get(name);
    if (!node) return;
    node.expanded = open === undefined ? !node.expanded : open;
    node.plugins.hidden = !node.expanded;
    node.li.classList.toggle("expanded", node.expanded);
    node.caret.setAttribute("aria-expanded", String(node.expanded));
    node.li.setAttribute("aria-expanded", String(node.expanded));
  }

  select(edge, plugin = null) {
    if (this.selected && this.selected !== edge) {
      const old = this.nodes.get(this.selected);
      if (old) {
        old.row.classList.remove("selected");
        old.li.removeAttribute("aria-selected");
        this.markPlugin(old, null);
      }
    }
    this.selected = edge;
    this.selectedPlugin = plugin;
    const node = edge ? this.nodes.get(edge) : null;
    if (node) {
      node.row.classList.add("selected");
      node.li.setAttribute("aria-selected", "true");
      this.toggle(edge, true);
      this.markPlugin(node);
      if (node.row.scrollIntoView) node.row.scrollIntoView({ block: "nearest" });
    }
  }

  markPlugin(node) {
    const current = node.name === this.selected ? this.selectedPlugin : null;
    for (const li of node.plugins.children) li.classList.toggle("selected", li.dataset.plugin === current);
  }

  // ---------------------------------------------------------------- filter and summary

  applyFilter(text) {
    this.filterText = text.trim().toLowerCase();
    const visible = new Set();
    for (const name of this.nodes.keys()) {
      if (!this.filterText || name.toLowerCase().includes(this.filterText)) {
        // an edge that matches keeps its ancestors visible
        let n = name;
        while (n !== null && !visible.has(n)) {
          visible.add(n);
          n = this.nodes.get(n).parent ?? null;
        }
      }
    }
    for (const [name, node] of this.nodes) node.li.hidden = !visible.has(name);
  }

  updateSummary() {
    let connected = 0;
    for (const node of this.nodes.values()) if (node.state && node.state.endpoint && node.state.endpoint.connected) connected += 1;
    const total = this.nodes.size;
    setText(this.summary, `${total} edge${total === 1 ? "" : "s"}, ${connected} connected`);
    this.emptyEl.hidden = total > 0;
    this.counts = { total, connected };
  }
}
