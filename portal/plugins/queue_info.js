// Portal module of the queue_info plugin: partitions with their limits and free nodes, the user's jobs,
// the allocations (accounts) -- refreshed when the plugin pushes `queue_changed`.

import {
  FINAL_STATES,
  KeyedTable,
  badge,
  card,
  errorText,
  facts,
  fmtBytes,
  fmtDuration,
  fmtTime,
  h,
  meter,
  note,
  setBadge,
} from "/portal/dom.js";

const minutes = (m) => (m === null || m === undefined ? "–" : m === "UNLIMITED" ? "unlimited" : fmtDuration(Number(m) * 60));
const dash = (v) => (v === null || v === undefined || v === "" ? "–" : String(v));
const badgeCell = (td, row, v) => (td.firstChild ? setBadge(td.firstChild, v) : td.append(badge(v)));

export async function render(root, ctx) {
  const api = ctx.api;
  let everybody = false;

  const about = facts();
  const aboutCard = card("Batch system");
  aboutCard.body.append(about.el);

  const partitions = new KeyedTable({
    key: (q) => q.name,
    empty: "No partitions visible to this user.",
    columns: [
      { key: "name", label: "Partition", value: (q) => `${q.name}${q.default ? " (default)" : ""}` },
      { key: "state", label: "State", value: (q) => q.state || "UNKNOWN", render: badgeCell },
      {
        key: "free",
        label: "Free nodes",
        value: (q) => `${q.nodes_idle ?? 0}/${q.nodes_total ?? 0}`,
        render: (td, q, v) => {
          if (!td.meter) {
            td.meter = meter(0);
            td.replaceChildren(td.meter.el);
          }
          const total = Number(q.nodes_total) || 0;
          td.meter.set(total ? (100 * (Number(q.nodes_idle) || 0)) / total : 0, `${v} idle`);
          td.meter.el.classList.add("meter-free");
        },
      },
      { key: "nodes_available", label: "Usable", cls: "num", value: (q) => dash(q.nodes_available) },
      { key: "time_limit", label: "Time limit", cls: "nowrap", value: (q) => minutes(q.time_limit) },
      { key: "max_nodes", label: "Max nodes", cls: "num", value: (q) => (q.max_nodes === "UNLIMITED" ? "unlimited" : dash(q.max_nodes)) },
      { key: "cpus_per_node", label: "CPUs/node", cls: "num" },
      { key: "mem_per_node_mb", label: "Memory/node", cls: "num", value: (q) => (q.mem_per_node_mb == null ? "–" : fmtBytes(q.mem_per_node_mb * 2 ** 20)) },
      { key: "gpus_per_node", label: "GPUs/node", cls: "num" },
      { key: "max_jobs_per_user", label: "Jobs/user", cls: "num", value: (q) => dash(q.max_jobs_per_user) },
      { key: "features", label: "Features", value: (q) => (q.features || []).join(", ") || "–" },
    ],
  });

  const jobs = new KeyedTable({
    key: (j) => String(j.job_id),
    compare: (a, b) => (b.submit_time || 0) - (a.submit_time || 0) || String(b.job_id).localeCompare(String(a.job_id), undefined, { numeric: true }),
    empty: "No jobs in the queue.",
    columns: [
      { key: "job_id", label: "Job id", cls: "mono" },
      { key: "state", label: "State", value: (j) => j.state || "UNKNOWN", render: badgeCell },
      { key: "job_name", label: "Name", cls: "wide" },
      { key: "user", label: "User" },
      { key: "partition", label: "Partition" },
      { key: "account", label: "Account" },
      { key: "nodes", label: "Nodes", cls: "num" },
      { key: "time", label: "Used / limit", cls: "nowrap", value: (j) => `${fmtDuration(j.time_used)} / ${minutes(j.time_limit)}` },
      { key: "submit_time", label: "Submitted", cls: "nowrap", value: (j) => fmtTime(j.submit_time) },
      { key: "reason", label: "Reason / nodes", value: (j) => (j.state === "RUNNING" ? dash(j.node_list) : dash(j.reason)) },
      {
        key: "actions",
        label: "",
        cls: "actions",
        value: (j) => (FINAL_STATES.has(j.state) ? "" : "cancel"),
        render: (td, j, v) =>
          td.replaceChildren(v ? h("button.small.danger", { type: "button", on: { click: () => cancel(j.job_id) } }, "Cancel") : ""),
      },
    ],
  });

  const allocations = new KeyedTable({
    key: (a) => `${a.cluster}|${a.account}|${a.user}|${a.partition}`,
    empty: "No allocations.",
    columns: [
      { key: "account", label: "Account" },
      { key: "user", label: "User", value: (a) => a.user ?? "(account)" },
      { key: "partition", label: "Partition", value: (a) => a.partition ?? "all" },
      { key: "qos", label: "QOS" },
      { key: "fairshare", label: "Fairshare", cls: "num" },
      { key: "max_jobs", label: "Max jobs", cls: "num" },
      { key: "max_wall", label: "Max wall", value: (a) => (a.max_wall == null ? "–" : minutes(a.max_wall)) },
      { key: "remaining_node_hours", label: "Node-hours left", cls: "num" },
    ],
  });

  const everyone = h("input", { type: "checkbox", on: { change: () => ((everybody = everyone.checked), loadJobs(true)) } });
  const partCard = card("Partitions", { cls: "partitions" });
  const partStatus = h("div");
  partCard.body.append(partStatus, partitions.el);
  const jobsTitle = h("span", "My jobs");
  const jobsCard = card(jobsTitle, { actions: [h("label.inline-check", everyone, "everybody's jobs")] });
  const jobsStatus = h("div");
  jobsCard.body.append(jobsStatus, jobs.el);
  const allocCard = card("Allocations");
  const allocStatus = h("div");
  allocCard.body.append(allocStatus, allocations.el);
  root.append(aboutCard.el, partCard.el, jobsCard.el, allocCard.el);

  const query = (force) => ({ user: everybody ? "*" : undefined, force: force ? "true" : undefined });

  async function loadAbout() {
    try {
      const [b, alloc] = await Promise.all([api.get("backend"), api.get("job_allocation")]);
      about.set("Scheduler", b.backend);
      const a = alloc.allocation;
      about.set("This edge runs", a ? `inside job ${a.job_id} (${a.partition || "?"}, ${a.n_nodes ?? "?"} nodes)` : "on a login node (not inside a job)");
    } catch (err) {
      about.set("Scheduler", `unknown (${errorText(err)})`);
    }
  }
  async function loadPartitions(force = false) {
    try {
      const info = await api.sget("get_info", "", query(force));
      partitions.setAll(Object.entries(info.queues || {}).map(([name, q]) => ({ ...q, name })));
      partStatus.replaceChildren();
    } catch (err) {
      partStatus.replaceChildren(note(`Could not read the partitions: ${errorText(err)}`, "error"));
    }
  }
  async function loadJobs(force = false) {
    jobsTitle.textContent = everybody ? "All jobs" : "My jobs";
    try {
      const answer = await api.sget("list_all_jobs", "", query(force));
      jobs.setAll(answer.jobs || []);
      jobsStatus.replaceChildren();
    } catch (err) {
      jobsStatus.replaceChildren(note(`Could not list the jobs: ${errorText(err)}`, "error"));
    }
  }
  async function loadAllocations(force = false) {
    try {
      const answer = await api.sget("list_allocations", "", query(force));
      allocations.setAll(answer.allocations || []);
      allocStatus.replaceChildren();
    } catch (err) {
      allocStatus.replaceChildren(note(`No allocations to show: ${errorText(err)}`, err.status === 502 ? "warn" : "error"));
    }
  }
  async function cancel(jobId) {
    const ok = await ctx.confirm({
      title: `Cancel job ${jobId}?`,
      body: "The batch system is told to cancel it (a whole array, if it is one). This cannot be undone.",
      action: "Cancel job",
    });
    if (!ok) return;
    try {
      await api.spost("cancel", encodeURIComponent(jobId));
      ctx.toast(`Job ${jobId} cancelled.`, "ok");
      loadJobs(true);
    } catch (err) {
      ctx.toast(`Cancel failed: ${errorText(err)}`, "error");
    }
  }
  const all = (force) => Promise.all([loadAbout(), loadPartitions(force), loadJobs(force), loadAllocations(force)]);

  let timer = null;
  ctx.on("queue_changed", (d) => {
    clearTimeout(timer);
    timer = setTimeout(() => (d && d.kind === "queues" ? loadPartitions() : loadJobs()), 200);
  });
  ctx.onResync(() => all(false));
  ctx.every(30000, () => loadPartitions());
  ctx.setActions([h("button.secondary", { type: "button", on: { click: () => all(true) } }, "Refresh now")]);
  await all(false);
}
