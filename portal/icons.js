// Plugin icons as SVG drawn here (no emoji font needed, no image requests): the built-in plugins have their
// own; any other plugin gets a monogram of its title.

import { svg } from "./dom.js";

const PATHS = {
  sysinfo: ["M3 4h18v12H3z", "M8 20h8", "M12 16v4", "M7 12l3-3 2 2 4-4"],
  queue_info: ["M4 5h16v4H4z", "M4 11h16v4H4z", "M4 17h10v3H4z"],
  psij: ["M3 5h18v14H3z", "M7 9l3 3-3 3", "M12 15h5"],
  staging: ["M3 6h6l2 2h10v11H3z", "M12 11v5", "M9.5 13.5L12 11l2.5 2.5"],
  rhapsody: ["M3 4h6v5H3z", "M15 4h6v5h-6z", "M9 15h6v5H9z", "M6 9v3h12V9", "M12 12v3"],
};

const FILE_PATHS = {
  dir: ["M3 6h6l2 2h10v11H3z"],
  file: ["M6 3h8l4 4v14H6z", "M14 3v4h4"],
  symlink: ["M6 3h8l4 4v14H6z", "M9 15l6-6", "M11 9h4v4"],
  other: ["M6 3h12v18H6z"],
};

/** An icon for a directory entry of type dir, file, symlink or other. */
export function fileIconNode(type) {
  // the type comes from the edge: only an own key of the table ("constructor" is not an icon)
  const known = Object.hasOwn(FILE_PATHS, type) ? type : "other";
  const el = svg("svg", { viewBox: "0 0 24 24", class: `icon icon-${known}`, "aria-hidden": "true", focusable: "false" });
  for (const d of FILE_PATHS[known]) el.append(svg("path", { d }));
  return el;
}

/** An icon for a plugin of `type` (its title's first letter when it has no icon of its own). */
export function pluginIconNode(type, title = "") {
  const paths = Object.hasOwn(PATHS, type) ? PATHS[type] : null; // the type comes from the edge
  const el = svg("svg", { viewBox: "0 0 24 24", class: "icon", "aria-hidden": "true", focusable: "false" });
  if (paths) {
    for (const d of paths) el.append(svg("path", { d }));
    return el;
  }
  el.classList.add("icon-monogram");
  el.append(svg("rect", { x: 2, y: 2, width: 20, height: 20, rx: 5 }));
  const letter = (String(title || type || "?").match(/[A-Za-z0-9]/) || ["?"])[0].toUpperCase();
  el.append(svg("text", { x: 12, y: 16.5, "text-anchor": "middle" }, letter));
  return el;
}
