// Portal module of the sysinfo plugin: the node's CPU, memory, disks, GPUs and network, with load and
// memory as small live plots.  The Explorer imports it as an ES module and calls render(root, ctx);
// ctx.get/ctx.post call the plugin (relative to /{edge}/sysinfo/).  Everything is rendered as text.

import { KeyedTable, card, errorText, facts, fmtBytes, fmtDuration, h, meter, note, setText } from "/portal/dom.js";
import { Sparkline } from "/portal/plot.js";

const INTERVAL_MS = 3000;

export async function render(root, ctx) {
  const api = ctx.api;
  const status = h("p.muted.refresh-status", { "aria-live": "polite" });
  const system = facts();
  const cpu = facts();
  const memory = facts();
  const load = new Sparkline({ label: "Load average (1 min)", format: (v) => v.toFixed(2) });
  const mem = new Sparkline({ label: "Memory used", max: 100, format: (v) => `${v.toFixed(1)}%` });
  const cpuBar = meter(0);
  const memBar = meter(0);
  cpu.set("Utilisation", cpuBar.el);
  memory.set("Used", memBar.el);

  const disks = new KeyedTable({
    key: (d) => d.mount,
    empty: "No disks found.",
    columns: [
      { key: "mount", label: "Mount", cls: "mono" },
      { key: "type", label: "Type", value: (d) => `${d.type || "–"}${d.shared ? " (shared)" : ""}` },
      { key: "fstype", label: "FS" },
      { key: "device", label: "Device", cls: "mono wide" },
      { key: "total", label: "Size", cls: "num", value: (d) => fmtBytes(d.total) },
      { key: "free", label: "Free", cls: "num", value: (d) => fmtBytes(d.free) },
      {
        key: "percent",
        label: "Used",
        value: (d) => (d.reachable === false ? "unreachable" : `${d.percent ?? 0}`),
        render: (td, d, v) => {
          if (d.reachable === false) {
            td.replaceChildren(h("span.badge.state-failed", "UNREACHABLE"));
            return;
          }
          if (!td.meter) {
            td.meter = meter(0);
            td.replaceChildren(td.meter.el);
          }
          td.meter.set(Number(v));
        },
      },
    ],
  });
  const gpus = new KeyedTable({
    key: (g) => `${g.vendor}:${g.index ?? g.uuid ?? g.name}`,
    empty: "No GPUs found on this node.",
    columns: [
      { key: "index", label: "#", cls: "num" },
      { key: "vendor", label: "Vendor" },
      { key: "name", label: "Model" },
      {
        key: "memory_total_mb",
        label: "Memory",
        cls: "num",
        value: (g) =>
          g.memory_total_mb == null
            ? "–"
            : `${fmtBytes((g.memory_used_mb || 0) * 2 ** 20)} / ${fmtBytes(g.memory_total_mb * 2 ** 20)}`,
      },
      { key: "utilization_percent", label: "Busy", cls: "num", value: (g) => (g.utilization_percent == null ? "–" : `${g.utilization_percent}%`) },
      { key: "temperature_c", label: "Temp", cls: "num", value: (g) => (g.temperature_c == null ? "–" : `${g.temperature_c} °C`) },
    ],
  });
  const network = new KeyedTable({
    key: (n) => n.interface,
    empty: "No network interfaces.",
    columns: [
      { key: "interface", label: "Interface", cls: "mono" },
      { key: "is_up", label: "State", value: (n) => (n.is_up ? "up" : "down") },
      { key: "ipv4", label: "IPv4", cls: "mono", value: (n) => (n.ipv4 || []).join(", ") || "–" },
      { key: "speed_mbps", label: "Speed", cls: "num", value: (n) => (n.speed_mbps ? `${n.speed_mbps} Mb/s` : "–") },
      { key: "rx_bytes", label: "Received", cls: "num", value: (n) => fmtBytes(n.rx_bytes) },
      { key: "tx_bytes", label: "Sent", cls: "num", value: (n) => fmtBytes(n.tx_bytes) },
    ],
  });

  const systemCard = card("System");
  systemCard.body.append(system.el);
  const cpuCard = card("CPU");
  cpuCard.body.append(cpu.el, h("div.plot-gap"), load.el);
  const memCard = card("Memory");
  memCard.body.append(memory.el, h("div.plot-gap"), mem.el);
  const diskCard = card("Disks");
  diskCard.body.append(disks.el);
  const gpuCard = card("GPUs");
  gpuCard.body.append(gpus.el);
  const netCard = card("Network");
  netCard.body.append(network.el);
  const error = h("div");
  root.append(error, h("div.grid-3", systemCard.el, cpuCard.el, memCard.el), diskCard.el, gpuCard.el, netCard.el, status);

  let busy = false;
  const refresh = async () => {
    if (busy) return;
    busy = true;
    try {
      const m = await api.sget("metrics");
      error.replaceChildren();
      const s = m.system || {};
      system.set("Host", s.hostname);
      system.set("OS", s.os);
      system.set("Kernel", s.kernel);
      system.set("Architecture", s.arch);
      system.set("Up for", fmtDuration(s.uptime));
      system.set("Python", s.python);
      const c = m.cpu || {};
      cpu.set("Model", c.model || "unknown");
      cpu.set("Cores", `${c.cores_physical ?? "?"} physical, ${c.cores_logical ?? "?"} logical`);
      if (c.freq_mhz) cpu.set("Clock", `${Math.round(c.freq_mhz)} MHz`);
      const la = c.load_avg || [];
      cpu.set("Load (1, 5, 15 min)", la.map((v) => Number(v).toFixed(2)).join("  ") || "–");
      cpuBar.set(c.percent ?? 0);
      const mm = m.memory || {};
      memory.set("Total", fmtBytes(mm.total));
      memory.set("Available", fmtBytes(mm.available));
      memBar.set(mm.percent ?? 0, `${fmtBytes(mm.used)} (${mm.percent ?? 0}%)`);
      memory.set("Swap", mm.swap_total ? `${fmtBytes(mm.swap_used)} of ${fmtBytes(mm.swap_total)}` : "none");
      if (la.length) load.push(Number(la[0]));
      if (mm.percent !== undefined) mem.push(Number(mm.percent));
      disks.setAll(m.disks || []);
      gpus.setAll(m.gpus || []);
      network.setAll(m.network || []);
      setText(gpuCard.el.querySelector("h2"), `GPUs (${(m.gpus || []).length})`);
      setText(status, `Updated ${new Date().toLocaleTimeString()}; every ${INTERVAL_MS / 1000} s while this page is open.`);
    } catch (err) {
      error.replaceChildren(note(`Could not read the metrics: ${errorText(err)}`, "error"));
    } finally {
      busy = false;
    }
  };
  ctx.setActions([h("button.secondary", { type: "button", on: { click: refresh } }, "Refresh")]);
  await refresh();
  ctx.every(INTERVAL_MS, refresh);
}
