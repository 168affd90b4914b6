// A small live plot (SVG): the last N samples of one value, with the current value and the range as text.

import { h, setText, svg } from "./dom.js";

const W = 300;
const H = 64;

export class Sparkline {
  constructor({ label, unit = "", max = null, samples = 60, format = null }) {
    this.label = label;
    this.unit = unit;
    this.fixedMax = max;
    this.samples = samples;
    this.values = [];
    this.format = format || ((v) => `${Math.round(v * 100) / 100}${unit}`);
    this.area = svg("path", { class: "plot-area" });
    this.line = svg("polyline", { class: "plot-line", fill: "none" });
    this.dot = svg("circle", { class: "plot-dot", r: 3 });
    this.grid = svg("line", { class: "plot-grid", x1: 0, x2: W, y1: H / 2, y2: H / 2 });
    this.plot = svg(
      "svg",
      { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", class: "plot-svg", role: "img", "aria-label": label },
      this.grid,
      this.area,
      this.line,
      this.dot,
    );
    this.current = h("span.plot-current");
    this.range = h("span.plot-range");
    this.el = h(
      "figure.plot",
      h("figcaption", h("span.plot-label", label), this.current),
      this.plot,
      h("div.plot-foot", this.range),
    );
  }

  push(value) {
    if (value === null || value === undefined || Number.isNaN(Number(value))) return;
    this.values.push(Number(value));
    if (this.values.length > this.samples) this.values.shift();
    this.draw();
  }

  draw() {
    const vs = this.values;
    const top = this.fixedMax ?? Math.max(1e-9, ...vs) * 1.15;
    // the samples so far fill the width; once there are `samples` of them the plot scrolls
    const step = W / Math.max(1, Math.min(this.samples, vs.length) - 1);
    const x0 = W - (vs.length - 1) * step;
    const pts = vs.map((v, i) => [x0 + i * step, H - 2 - (Math.min(v, top) / top) * (H - 4)]);
    const line = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    this.line.setAttribute("points", line);
    if (pts.length) {
      const area = `M${pts[0][0].toFixed(1)},${H} L${line.replaceAll(" ", " L")} L${pts[pts.length - 1][0].toFixed(1)},${H} Z`;
      this.area.setAttribute("d", area);
    }
    const [lx, ly] = pts[pts.length - 1] || [W, H];
    this.dot.setAttribute("cx", lx.toFixed(1));
    this.dot.setAttribute("cy", ly.toFixed(1));
    const last = vs[vs.length - 1];
    setText(this.current, this.format(last));
    setText(
      this.range,
      `min ${this.format(Math.min(...vs))} · max ${this.format(Math.max(...vs))} · ${vs.length} sample${vs.length === 1 ? "" : "s"}`,
    );
  }
}
