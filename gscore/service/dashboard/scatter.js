// One scatter plot per measure against test accuracy (the paper's Figure 3), drawn with plotly.js
// (served from the installed plotly package), coloured by a hyperparameter the user picks.
import { esc, hyper, interval } from "/dashboard/format.js";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function compareValues(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (a === null || a === undefined) return 1;
  if (b === null || b === undefined) return -1;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

function tauTitle(entry) {
  if (!entry || entry.tau === null || entry.tau === undefined) return "τ n/a";
  const ci = interval(entry, "tau");
  return `τ = ${entry.tau.toFixed(2)}${ci ? ` [${ci[0].toFixed(2)}, ${ci[1].toFixed(2)}]` : ""}`;
}

function hoverText(model, measure, axes) {
  const lines = [`<b>${esc(model.model_name)}</b>`, `${esc(measure)} = ${model.scores[measure]}`, `test accuracy = ${model.test_accuracy}`];
  for (const axis of axes) lines.push(`${esc(axis)} = ${esc(hyper(model.hyperparameters?.[axis]))}`);
  return lines.join("<br>");
}

function traces(models, measure, colorBy, axes) {
  const usable = models.filter((m) => typeof m.scores?.[measure] === "number" && typeof m.test_accuracy === "number");
  const groups = new Map();
  for (const model of usable) {
    const key = colorBy ? hyper(model.hyperparameters?.[colorBy]) : "models";
    if (!groups.has(key)) groups.set(key, { raw: colorBy ? model.hyperparameters?.[colorBy] : key, models: [] });
    groups.get(key).models.push(model);
  }
  const keys = [...groups.keys()].sort((a, b) => compareValues(groups.get(a).raw, groups.get(b).raw));
  return keys.map((key, index) => {
    const group = groups.get(key).models;
    return {
      type: "scatter",
      mode: "markers",
      name: colorBy ? `${colorBy} = ${key}` : key,
      x: group.map((m) => m.scores[measure]),
      y: group.map((m) => m.test_accuracy),
      text: group.map((m) => hoverText(m, measure, axes)),
      customdata: group.map((m) => m.model_name),
      hovertemplate: "%{text}<extra></extra>",
      marker: { size: 9, color: PALETTE[index % PALETTE.length], opacity: 0.85 },
    };
  });
}

export function scatterPlots(container, models, ranking, measures, axes, orientations) {
  const options = axes.map((axis) => `<option value="${esc(axis)}">${esc(axis)}</option>`).join("");
  container.innerHTML = `<div class="controls"><label>Colour by <select class="color-by">
      <option value="">(none)</option>${options}</select></label>
      <span class="muted">Hover a point for its model; click a legend entry to hide a group.</span></div>
    <div class="plots">${measures.map((m) => `<div class="plot" data-measure="${esc(m)}"></div>`).join("")}</div>`;
  const select = container.querySelector(".color-by");
  if (axes.length) select.value = axes[0];

  const draw = () => {
    const colorBy = select.value || null;
    for (const div of container.querySelectorAll(".plot")) {
      const measure = div.dataset.measure;
      const entry = ranking.measures?.[measure];
      const direction = (orientations[measure] ?? 1) < 0 ? "lower" : "higher";
      const layout = {
        title: { text: `${esc(measure)}<br><span style="font-size:12px">${tauTitle(entry)} (n = ${entry?.n_models ?? entry?.n ?? 0})</span>`, font: { size: 14 } },
        xaxis: { title: { text: `${esc(measure)} (${direction} predicts better generalization)` }, zeroline: false },
        yaxis: { title: { text: "test accuracy" }, zeroline: false },
        margin: { l: 60, r: 20, t: 60, b: 55 },
        legend: { title: { text: colorBy ? esc(colorBy) : "" }, font: { size: 11 } },
        showlegend: Boolean(colorBy),
        hovermode: "closest",
        font: { family: "system-ui, sans-serif" },
      };
      window.Plotly.react(div, traces(models, measure, colorBy, axes), layout, { displaylogo: false, responsive: true });
    }
  };
  select.addEventListener("change", draw);
  draw();
}
