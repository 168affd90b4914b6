// Portal module of the sysinfo plugin: renders an edge's metrics into `root`.
// The Explorer imports it as an ES module and calls render(root, api) with api.get(path) -> JSON.
export async function render(root, api) {
  const { sid } = await api.post("register_session");
  const m = await api.get(`metrics/${sid}`);
  const rows = [
    ["CPU", `${m.cpu.model ?? ""} (${m.cpu.cores_logical ?? "?"} cores)`],
    ["Memory", `${Math.round((m.memory.total ?? 0) / 2 ** 30)} GiB`],
    ["Disks", String(m.disks.length)],
    ["GPUs", String(m.gpus.length)],
  ];
  const table = document.createElement("table");
  for (const [k, v] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = k; // textContent: plugin data is never parsed as HTML
    tr.insertCell().textContent = v;
  }
  root.replaceChildren(table);
  await api.post(`unregister_session/${sid}`);
}
