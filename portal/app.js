// The radical-edge Explorer: sign-in, the edge tree, and a page per edge and per plugin.
//
// Routes (the URL fragment): #/ overview, #/e/EDGE the edge, #/e/EDGE/PLUGIN[/...] a plugin's page.
// A plugin page is the plugin's module from /plugins/{type}.js (this origin only) when the bridge has one,
// else it is built from the plugin's ui_config.

import { ApiError, PluginApi, onUnauthorized, postJSON, request, signIn, signOut, signedIn } from "./api.js";
import * as dom from "./dom.js";
import { badge, card, confirmDialog, errorText, facts, fmtTime, h, note, setText, toast } from "./dom.js";
import { EventFeed } from "./events.js";
import { renderGeneric } from "./generic.js";
import { EdgeTree, hrefEdge, hrefPlugin, pluginIcon, pluginTitle } from "./tree.js";

/** the names the bridge serves portal modules for: /plugins/{name}.js */
const MODULE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$/;

class Explorer {
  constructor(root) {
    this.root = root;
    this.feed = null;
    this.tree = null;
    this.edges = {};
    this.bridgeUrl = "";
    this.page = null;
    this.apis = new Map();
    this.modules = new Map();
    this.routeSeq = 0;
    this.started = false;
    this.topologySeen = null;
  }

  async boot() {
    onUnauthorized(() => {
      if (this.started) this.showLogin("Your sign-in is no longer valid (the bridge answered 401 Unauthorized). Sign in again.");
    });
    window.addEventListener("pagehide", () => this.closeSessions());
    let ok;
    try {
      ok = await signedIn();
    } catch (err) {
      this.showUnreachable(err);
      return;
    }
    if (ok) this.start();
    else this.showLogin();
  }

  showUnreachable(err) {
    const retry = h("button.primary", { type: "button", on: { click: () => this.boot() } }, "Try again");
    this.root.className = "login-screen";
    this.root.replaceChildren(
      h("div.login-card", h("h1", "radical-edge Explorer"), note(`The bridge cannot be reached: ${errorText(err)}`, "error"), retry),
    );
  }

  // ---------------------------------------------------------------- sign-in

  showLogin(message = "") {
    this.stop();
    const input = h("input", {
      id: "token",
      type: "password",
      name: "token",
      autocomplete: "off",
      required: true,
      spellcheck: "false",
      "aria-describedby": "login-hint",
    });
    const error = h("p.login-error", { role: "alert", id: "login-error", hidden: !message }, message);
    const button = h("button.primary", { type: "submit" }, "Sign in");
    const form = h(
      "form.login-form",
      h("label", { for: "token" }, "Bridge token"),
      input,
      error,
      button,
      h(
        "p.hint",
        { id: "login-hint" },
        "The token is in ~/.radical/edge/bridge.token on the bridge's host (or what the bridge was given with --token). " +
          "The browser keeps it only as an HttpOnly cookie of this site.",
      ),
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const token = input.value;
      button.disabled = true;
      error.hidden = true;
      try {
        await signIn(token);
        input.value = "";
        this.start();
      } catch (err) {
        error.hidden = false;
        if (err instanceof ApiError && err.status === 401) {
          error.textContent = "Wrong token: the bridge refused it (401 Unauthorized). Check the token and try again.";
        } else if (err instanceof ApiError && err.status === 0) {
          error.textContent = "The bridge cannot be reached. Is it running?";
        } else {
          error.textContent = `Sign-in failed: ${errorText(err)}`;
        }
        input.select();
      } finally {
        button.disabled = false;
      }
    });
    this.root.className = "login-screen";
    this.root.replaceChildren(
      h(
        "div.login-card",
        h("div.brand.brand-large", h("img", { src: "/portal/icon.svg", alt: "", width: 36, height: 36 }), h("span", "radical-edge Explorer")),
        h("p.lead", "Sign in with the bridge token to see the edges, their plugins, jobs and files."),
        form,
      ),
    );
    input.focus();
  }

  // ---------------------------------------------------------------- the shell

  async signOut() {
    try {
      await signOut();
    } catch (err) {
      console.warn("sign-out failed", err);
    }
    this.showLogin("Signed out. Sign in again with the bridge token.");
  }

  start() {
    this.stop();
    this.started = true;
    this.edges = {};
    this.tree = new EdgeTree();
    this.connBadge = h("span.conn", { role: "status", "aria-live": "polite" });
    this.counts = h("span.counts");
    const topbar = h(
      "header.topbar",
      h("a.brand", { href: "#/" }, h("img", { src: "/portal/icon.svg", alt: "", width: 24, height: 24 }), h("span", "radical-edge Explorer")),
      h("span.topbar-spacer"),
      this.counts,
      this.connBadge,
      h("button.signout", { type: "button", on: { click: () => this.signOut() } }, "Sign out"),
    );
    this.main = h("main.content", { id: "main", tabindex: "-1" });
    this.sidebar = h("aside.sidebar", this.tree.el);
    this.root.className = "shell";
    this.root.replaceChildren(topbar, h("div.layout", this.sidebar, this.main));
    this.setOnline(false, true);

    let seen;
    this.topologySeen = new Promise((resolve) => {
      seen = resolve;
    });
    const feed = new EventFeed();
    this.feed = feed;
    feed.on("status", (online) => this.setOnline(online));
    feed.on("topology", (topology) => {
      this.applyTopology(topology);
      seen();
    });
    feed.on("change", (change) => this.applyChange(change));
    feed.on("gap", () => this.refetchTopology());
    feed.on("unauthorized", () => this.showLogin("Your sign-in is no longer valid (the bridge answered 401 Unauthorized). Sign in again."));
    feed.start();
    // if the event stream is slow to start, ask once
    setTimeout(() => {
      if (this.feed === feed && !Object.keys(this.edges).length) this.refetchTopology().then(seen, () => {});
    }, 3000);
    this.onHash = () => this.route();
    window.addEventListener("hashchange", this.onHash);
    this.route();
  }

  stop() {
    this.started = false;
    if (this.feed) this.feed.stop();
    this.feed = null;
    if (this.onHash) window.removeEventListener("hashchange", this.onHash);
    this.disposePage();
  }

  setOnline(online, initial = false) {
    if (this.page && this.page.onStatus) this.page.onStatus(online);
    this.root.classList.toggle("offline", !online && !initial);
    this.connBadge.className = `conn ${online ? "conn-live" : initial ? "conn-connecting" : "conn-offline"}`;
    setText(this.connBadge, online ? "Live" : initial ? "Connecting…" : "Offline: reconnecting…");
    this.connBadge.title = online
      ? "Receiving live events from the bridge"
      : "The event stream to the bridge is down; the Explorer reconnects and catches up on its own";
  }

  updateCounts() {
    const { total, connected } = this.tree.counts;
    setText(this.counts, `${connected}/${total} edges connected`);
  }

  // ---------------------------------------------------------------- topology

  applyTopology(topology) {
    this.bridgeUrl = (topology.bridge && topology.bridge.url) || this.bridgeUrl;
    this.edges = { ...(topology.edges || {}) };
    this.tree.setAll(this.edges);
    this.updateCounts();
    this.markSelection();
    if (this.page && this.page.onTopology) this.page.onTopology();
  }

  applyChange(change) {
    if (!change || typeof change.edge !== "string") return;
    const name = change.edge;
    if (change.change === "removed" || !change.state) {
      delete this.edges[name];
      this.tree.remove(name);
    } else {
      this.edges[name] = change.state;
      this.tree.upsert(name, change.state);
    }
    this.updateCounts();
    if (this.page && this.page.onEdge) this.page.onEdge(name);
  }

  async refetchTopology() {
    try {
      const answer = await postJSON("/edge/list", {});
      this.applyTopology(answer.data || {});
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) console.warn("topology refetch failed", err);
    }
  }

  // ---------------------------------------------------------------- routing

  parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const parts = raw ? raw.split("/").map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    }) : [];
    if (parts[0] === "e" && parts.length >= 2) return { edge: parts[1], plugin: parts[2] ?? null, sub: parts.slice(3) };
    return { edge: null, plugin: null, sub: [] };
  }

  async route() {
    const seq = ++this.routeSeq;
    const { edge, plugin, sub } = this.parseHash();
    if (edge && !(edge in this.edges)) await Promise.race([this.topologySeen, new Promise((r) => setTimeout(r, 4000))]);
    if (seq !== this.routeSeq || !this.started) return;
    this.disposePage();
    this.current = { edge, plugin };
    this.markSelection();
    if (!edge) this.showOverview();
    else if (!plugin) this.showEdge(edge);
    else await this.showPlugin(edge, plugin, sub, seq);
  }

  markSelection() {
    if (!this.tree || !this.current) return;
    this.tree.select(this.current.edge, this.current.plugin);
  }

  disposePage() {
    const page = this.page;
    this.page = null;
    if (page && page.dispose) {
      try {
        page.dispose();
      } catch (err) {
        console.error("page cleanup failed", err);
      }
    }
  }

  pageShell(titleParts, { icon = "", crumbs = [] } = {}) {
    const actions = h("div.page-actions");
    const banner = h("div.banner", { hidden: true, role: "status" });
    const body = h("div.page-body");
    const nav = crumbs.length
      ? h("nav.crumbs", { "aria-label": "Breadcrumb" }, crumbs.map(([label, href], i) => [i ? h("span.sep", { "aria-hidden": "true" }, "›") : null, href ? h("a", { href }, label) : h("span", label)]))
      : null;
    const title = h("h1.page-title", icon ? h("span.page-icon", icon) : null, titleParts);
    const head = h("header.page-head", h("div.page-heading", nav, title), actions);
    this.main.replaceChildren(head, banner, body);
    return { head, title, actions, banner, body };
  }

  // ---------------------------------------------------------------- overview

  showOverview() {
    const shell = this.pageShell("Overview");
    const stats = facts();
    const refresh = () => {
      const names = Object.keys(this.edges);
      const connected = names.filter((n) => this.edges[n].endpoint && this.edges[n].endpoint.connected);
      let plugins = 0;
      for (const n of connected) plugins += Object.keys(this.edges[n].plugins || {}).length;
      stats.set("Bridge", this.bridgeUrl || location.origin);
      stats.set("Edges", `${connected.length} connected, ${names.length - connected.length} disconnected`);
      stats.set("Plugins on connected edges", String(plugins));
      stats.set("Event stream", this.feed && this.feed.online ? "live" : "offline (reconnecting)");
    };
    refresh();
    const summary = card("Bridge");
    summary.body.append(stats.el);
    const help = card("Getting started");
    help.body.append(
      h("p", "Pick an edge in the tree on the left. An edge is a service on a login or compute node; its plugins do the work:"),
      h(
        "ul.help-list",
        h("li", h("strong", "System Info"), ": CPU, memory, disks and GPUs of the node, with live load and memory plots."),
        h("li", h("strong", "Queue Info"), ": partitions with their limits and free nodes, your jobs, your allocations."),
        h("li", h("strong", "PSI/J Jobs"), ": submit jobs, follow their state and output live, cancel them."),
        h("li", h("strong", "Staging"), ": browse directories, upload and download files."),
        h("li", h("strong", "Rhapsody Tasks"), ": workflow tasks and their states."),
      ),
      h("p.muted", "Edges with dotted names (edge.1) run inside jobs of their parent and are shown under it."),
    );
    const admin = card("Administration", { cls: "danger-zone" });
    const terminate = h("button.danger", { type: "button" }, "Terminate bridge…");
    terminate.addEventListener("click", async () => {
      const ok = await confirmDialog({
        title: "Terminate the bridge?",
        body: [
          "The bridge process stops: this page, the API and every client lose their connection.",
          "Edges keep running and reconnect when a bridge is started again.",
        ],
        action: "Terminate bridge",
      });
      if (!ok) return;
      try {
        await request("POST", "/bridge/terminate");
        toast("The bridge is terminating.", "warn", 10000);
      } catch (err) {
        toast(`Terminate failed: ${errorText(err)}`, "error");
      }
    });
    admin.body.append(h("p", "Stop the bridge. Edges keep running and reconnect to the next bridge on the same address."), terminate);
    shell.body.append(h("div.grid-2", summary.el, help.el), admin.el);
    this.page = { onEdge: refresh, onTopology: refresh, onStatus: refresh, dispose() {} };
  }

  // ---------------------------------------------------------------- an edge

  showEdge(name) {
    const render = () => {
      const state = this.edges[name];
      if (!state) {
        const shell = this.pageShell(name, { crumbs: [["Overview", "#/"], [name, null]] });
        shell.body.append(note(`The bridge does not know an edge named ${name}. It may have been forgotten after being disconnected for a long time.`, "warn"));
        return;
      }
      const connected = !!(state.endpoint && state.endpoint.connected);
      const shell = this.pageShell([h("span.edge-title", name), h("span.edge-badge", { class: connected ? "is-connected" : "is-disconnected" }, connected ? "connected" : "disconnected")], {
        crumbs: [["Overview", "#/"], [name, null]],
      });
      const since = state.endpoint && state.endpoint.connected_since;
      const info = facts([
        ["State", connected ? "connected" : "disconnected"],
        [connected ? "Connected since" : "Last connected", since ? fmtTime(since) : "–"],
        ["Plugins", String(Object.keys(state.plugins || {}).length)],
      ]);
      if (connected && name !== "bridge") {
        const disconnect = h("button.danger", { type: "button" }, "Disconnect edge…");
        disconnect.addEventListener("click", async () => {
          const ok = await confirmDialog({
            title: `Disconnect edge ${name}?`,
            body: [
              `The bridge tells the edge service ${name} to shut down. It does not reconnect on its own: someone has to start it again.`,
              "Jobs it submitted keep running in the batch system.",
            ],
            action: "Disconnect edge",
          });
          if (!ok) return;
          try {
            await request("POST", `/edge/disconnect/${encodeURIComponent(name)}`);
            toast(`Edge ${name} was told to disconnect.`, "ok");
          } catch (err) {
            toast(`Disconnect failed: ${errorText(err)}`, "error");
          }
        });
        shell.actions.append(disconnect);
      }
      const grid = h("div.plugin-grid");
      for (const [plugin, pinfo] of Object.entries(state.plugins || {}).sort(([a], [b]) => a.localeCompare(b))) {
        const ui = pinfo.ui_config || {};
        grid.append(
          h(
            "a.plugin-card",
            { href: hrefPlugin(name, plugin), class: pinfo.enabled === false ? "disabled" : "" },
            h("span.plugin-card-icon", pluginIcon(plugin, pinfo)),
            h("span.plugin-card-title", pluginTitle(plugin, pinfo)),
            h("span.plugin-card-meta", `${plugin}${pinfo.version ? ` · v${pinfo.version}` : ""}`),
            typeof ui.description === "string" ? h("span.plugin-card-desc", ui.description) : null,
            pinfo.enabled === false ? h("span.plugin-card-error", `Not available here: ${pinfo.error || "unknown reason"}`) : null,
          ),
        );
      }
      const children = Object.keys(this.edges).filter((n) => n.startsWith(`${name}.`) && this.tree.parentOf(n) === name);
      const about = card("Edge");
      about.body.append(info.el);
      const plugins = card("Plugins");
      plugins.body.append(Object.keys(state.plugins || {}).length ? grid : note("This edge serves no plugins."));
      shell.body.append(about.el, plugins.el);
      if (children.length) {
        const kids = card("Child edges");
        kids.body.append(
          h("ul.child-edges", children.sort().map((c) => h("li", h("a", { href: hrefEdge(c) }, c), " ", badge(this.edges[c].endpoint && this.edges[c].endpoint.connected ? "CONNECTED" : "DISCONNECTED")))),
        );
        shell.body.append(kids.el);
      }
    };
    render();
    this.page = {
      onEdge: (changed) => {
        if (changed === name || changed.startsWith(`${name}.`)) render();
      },
      onTopology: render,
      dispose() {},
    };
  }

  // ---------------------------------------------------------------- a plugin

  pluginApi(edge, plugin) {
    const key = `${edge}\u0000${plugin}`;
    if (!this.apis.has(key)) this.apis.set(key, new PluginApi(edge, plugin));
    return this.apis.get(key);
  }

  closeSessions() {
    for (const api of this.apis.values()) api.close();
  }

  async hasModule(type) {
    if (!MODULE_NAME.test(type)) return false;
    if (!this.modules.has(type)) {
      const probe = fetch(`/plugins/${type}.js`, { method: "HEAD", credentials: "same-origin" }).then(
        (r) => r.ok,
        () => false,
      );
      this.modules.set(type, probe);
    }
    return this.modules.get(type);
  }

  async showPlugin(edge, plugin, sub, seq) {
    const state = this.edges[edge];
    const info = state && state.plugins ? state.plugins[plugin] : undefined;
    const crumbs = [["Overview", "#/"], [edge, hrefEdge(edge)], [info ? pluginTitle(plugin, info) : plugin, sub.length ? hrefPlugin(edge, plugin) : null]];
    if (!state || !info) {
      const shell = this.pageShell(plugin, { crumbs });
      shell.body.append(note(state ? `Edge ${edge} has no plugin named ${plugin}.` : `The bridge does not know an edge named ${edge}.`, "warn"));
      return;
    }
    const shell = this.pageShell(pluginTitle(plugin, info), { icon: pluginIcon(plugin, info), crumbs });
    shell.head.dataset.plugin = plugin;
    const updateBanner = () => {
      const st = this.edges[edge];
      const connected = !!(st && st.endpoint && st.endpoint.connected);
      shell.banner.hidden = connected;
      setText(shell.banner, connected ? "" : `Edge ${edge} is disconnected: its plugins cannot be reached until it reconnects.`);
    };
    updateBanner();
    if (info.enabled === false) {
      shell.body.append(note(`This plugin is not available on ${edge}: ${info.error || "unknown reason"}`, "warn"));
      this.page = { onEdge: updateBanner, dispose() {} };
      return;
    }
    const controller = new AbortController();
    const cleanups = [];
    // what a module registers after its page is gone is undone at once
    const track = (...fns) => {
      if (controller.signal.aborted) fns.forEach((fn) => fn());
      else cleanups.push(...fns);
    };
    let api;
    try {
      api = this.pluginApi(edge, plugin);
    } catch (err) {
      // a plugin named "." or "..": no URL reaches it (a browser folds such a segment away)
      shell.body.append(note(`This plugin cannot be reached from the portal: ${errorText(err)}`, "warn"));
      this.page = { onEdge: updateBanner, dispose() {} };
      return;
    }
    const feed = this.feed;
    const base = hrefPlugin(edge, plugin);
    const ctx = {
      edge,
      plugin,
      type: info.type || plugin,
      info,
      ui: info.ui_config || {},
      api,
      subpath: sub,
      signal: controller.signal,
      dom,
      get: (path, query) => api.get(path, query),
      post: (path, json) => api.post(path, json),
      /** fn(data, notification) for this plugin's notifications of `topic` ("*": all). */
      on: (topic, fn) => {
        const off = feed.on("notification", (n) => {
          if (n && n.edge === edge && n.plugin === plugin && (topic === "*" || n.topic === topic)) fn(n.data, n);
        });
        track(off);
        return off;
      },
      /** fn() when events may have been lost (a gap) or the stream came back: re-read what the page shows. */
      onResync: (fn) => {
        let wasOnline = feed.online;
        const offGap = feed.on("gap", () => fn());
        const offStatus = feed.on("status", (online) => {
          if (online && !wasOnline) fn();
          wasOnline = online;
        });
        track(offGap, offStatus);
      },
      href: (...parts) => base + parts.map((p) => `/${encodeURIComponent(p)}`).join(""),
      navigate: (...parts) => {
        location.hash = ctx.href(...parts);
      },
      /** fn() every `ms` while the page is shown and the tab visible. */
      every: (ms, fn) => {
        const id = setInterval(() => {
          if (!document.hidden) fn();
        }, ms);
        track(() => clearInterval(id));
        return id;
      },
      setActions: (nodes) => shell.actions.replaceChildren(...nodes),
      pluginApi: (name) => this.pluginApi(edge, name),
      plugins: () => (this.edges[edge] && this.edges[edge].plugins) || {},
      connected: () => !!(this.edges[edge] && this.edges[edge].endpoint && this.edges[edge].endpoint.connected),
      confirm: confirmDialog,
      toast,
    };
    this.page = {
      onEdge: (changed) => {
        if (changed === edge) updateBanner();
      },
      dispose: () => {
        controller.abort();
        for (const fn of cleanups.splice(0)) {
          try {
            fn();
          } catch (err) {
            console.error(err);
          }
        }
      },
    };
    const type = ctx.type;
    let render = null;
    if (await this.hasModule(type)) {
      try {
        // only from this origin: a fixed path, and the CSP allows no other script source
        const mod = await import(`/plugins/${type}.js`);
        render = mod.render;
      } catch (err) {
        shell.body.append(note(`The portal module of ${type} failed to load (${errorText(err)}); showing the generic page.`, "warn"));
      }
    }
    if (seq !== this.routeSeq) return;
    try {
      const cleanup = render ? await render(shell.body, ctx) : await renderGeneric(shell.body, ctx);
      if (typeof cleanup === "function") {
        if (controller.signal.aborted) cleanup();
        else cleanups.push(cleanup);
      }
    } catch (err) {
      if (err && err.name === "AbortError") return;
      shell.body.append(note(`This page failed: ${errorText(err)}`, "error"));
    }
  }
}

const app = new Explorer(document.getElementById("app"));
window.radicalEdgeExplorer = app; // for the browser tests and for debugging from the console
app.boot();
