// One scatter plot per measure against test accuracy (the paper's Figure 3), drawn with plotly.js
// (served from the installed plotly package), coloured by a hyperparameter the user picks. Models the
// ranking leaves out of the measure's coefficients are grey crosses with their own legend entry; the
// title sits below plotly's toolbar, axis titles wrap and get the margin they need.
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

const LEFT_OUT_COLOUR = "#555555";

// Names of the models the ranking counts in this measure's tau and psi (rows with in_coefficients).
function countedNames(entry) {
  const rows = entry?.ranking || [];
  return { counted: new Set(rows.filter((r) => r.in_coefficients).map((r) => r.name)), known: new Set(rows.map((r) => r.name)) };
}

function traces(models, measure, colorBy, axes, entry) {
  const usable = models.filter((m) => typeof m.scores?.[measure] === "number" && typeof m.test_accuracy === "number");
  const { counted, known } = countedNames(entry);
  const leftOut = usable.filter((m) => known.has(m.model_name) && !counted.has(m.model_name));
  const kept = usable.filter((m) => !leftOut.includes(m));
  const groups = new Map();
  for (const model of kept) {
    const key = colorBy ? hyper(model.hyperparameters?.[colorBy]) : "models";
    if (!groups.has(key)) groups.set(key, { raw: colorBy ? model.hyperparameters?.[colorBy] : key, models: [] });
    groups.get(key).models.push(model);
  }
  const keys = [...groups.keys()].sort((a, b) => compareValues(groups.get(a).raw, groups.get(b).raw));
  const drawn = keys.map((key, index) => {
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
  if (leftOut.length) {
    const reasons = new Map((entry?.ranking || []).map((r) => [r.name, r.reason]));
    drawn.push({
      type: "scatter",
      mode: "markers",
      name: `left out of τ/ψ (${leftOut.length})`,
      x: leftOut.map((m) => m.scores[measure]),
      y: leftOut.map((m) => m.test_accuracy),
      text: leftOut.map((m) => `${hoverText(m, measure, axes)}<br><i>left out: ${esc(reasons.get(m.model_name) || "")}</i>`),
      customdata: leftOut.map((m) => m.model_name),
      hovertemplate: "%{text}<extra></extra>",
      marker: { size: 10, symbol: "x-thin-open", color: LEFT_OUT_COLOUR, line: { width: 2, color: LEFT_OUT_COLOUR } },
    });
  }
  return drawn;
}

// Plotly's toolbar (zoom, pan, reset, PNG) sits in the top TOOLBAR_PX of each plot; the title starts below it.
const TOOLBAR_PX = 30;
const TITLE_PX = 40; // two lines of title
const CONFIG = {
  displaylogo: false,
  responsive: true,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "zoomIn2d", "zoomOut2d"],
};

export function scatterPlots(container, models, ranking, measures, axes, orientations) {
  const options = axes.map((axis) => `<option value="${esc(axis)}">${esc(axis)}</option>`).join("");
  container.innerHTML = `<div class="controls"><label>Colour by <select class="color-by">
      <option value="">(none)</option>${options}</select></label>
      <span class="muted">Hover a point for its model; click a legend entry to hide a group. Grey crosses: models left out of the coefficients.</span></div>
    <div class="plots">${measures.map((m) => `<div class="plot" data-measure="${esc(m)}"></div>`).join("")}</div>`;
  const select = container.querySelector(".color-by");
  if (axes.length) select.value = axes[0];

  const draw = () => {
    const colorBy = select.value || null;
    for (const div of container.querySelectorAll(".plot")) {
      const measure = div.dataset.measure;
      const entry = ranking.measures?.[measure];
      const direction = (orientations[measure] ?? 1) < 0 ? "lower" : "higher";
      const data = traces(models, measure, colorBy, axes, entry);
      const layout = {
        title: {
          text: `${esc(measure)}<br><span style="font-size:12px">${tauTitle(entry)} (n = ${entry?.n_models ?? entry?.n ?? 0})</span>`,
          font: { size: 14 },
          x: 0.5,
          xanchor: "center",
          yref: "container",
          y: 1,
          yanchor: "top",
          pad: { t: TOOLBAR_PX },
        },
        xaxis: {
          title: { text: `${esc(measure)}<br>(${direction} predicts better generalization)`, standoff: 8 },
          zeroline: false,
          automargin: true,
        },
        yaxis: { title: { text: "test accuracy", standoff: 8 }, zeroline: false, automargin: true },
        margin: { l: 60, r: 20, t: TOOLBAR_PX + TITLE_PX + 16, b: 60 },
        legend: { title: { text: colorBy ? esc(colorBy) : "" }, font: { size: 12 } },
        showlegend: Boolean(colorBy) || data.length > 1,
        hovermode: "closest",
        font: { family: "system-ui, sans-serif", size: 13 },
      };
      window.Plotly.react(div, data, layout, CONFIG);
    }
  };
  select.addEventListener("change", draw);
  draw();
}
