// The Kendall table like the paper's Table 1: rows measures, columns the hyperparameter axes (granulated
// psi), "total" and tau; intervals under the value when the ranking has them (not for one group, where the
// bootstrap has nothing to resample), the groups behind each psi and total, reasons on n/a cells; each
// measure's family (clustering, norm, spectral...) from /v1/measures beside its name.
import { esc, interval } from "/dashboard/format.js";

// The groups behind a cell: an axis's own (groups of models that differ only on it), the total's summed
// over the axes it averages; null for tau (its models are the n column).
function groupsBehind(entry, column) {
  const groups = entry.groups || {};
  if (column === "tau") return null;
  if (column !== "total") return typeof groups[column] === "number" ? [groups[column]] : null;
  const formed = Object.keys(groups).filter((axis) => entry.psi?.[axis] !== null && entry.psi?.[axis] !== undefined);
  return formed.length ? formed.map((axis) => groups[axis]) : null;
}

function cell(entry, column, value) {
  if (value === null || value === undefined) {
    const reason = entry.why?.[column] || "not available";
    return `<td class="num na" data-column="${esc(column)}" data-value="" title="${esc(reason)}">n/a</td>`;
  }
  const groups = groupsBehind(entry, column);
  const total = groups ? groups.reduce((a, b) => a + b, 0) : null;
  const groupsText = groups ? `<span class="groups" data-groups="${total}">${total} group${total === 1 ? "" : "s"}</span>` : "";
  // A bootstrap over one group (per axis) has nothing to resample: its interval [v, v] says nothing.
  const oneGroup = groups !== null && groups.every((count) => count === 1);
  const ci = interval(entry, column);
  let ciText = "";
  if (ci && oneGroup) {
    ciText = `<br><span class="ci one-group" title="one group per axis: no bootstrap interval">one group, no interval</span>`;
  } else if (ci) {
    ciText = `<br><span class="ci" data-ci-low="${ci[0]}" data-ci-high="${ci[1]}">[${ci[0].toFixed(2)}, ${ci[1].toFixed(2)}]</span>`;
  }
  return `<td class="num" data-column="${esc(column)}" data-value="${value}">${value.toFixed(2)}${ciText}${groupsText}</td>`;
}

export function kendallTable(container, ranking, families = {}) {
  const axes = ranking.axes || [];
  const entries = Object.entries(ranking.measures || {});
  if (!entries.length) {
    container.innerHTML = '<p class="muted">No scored model yet.</p>';
    return;
  }
  const head = [...axes, "total", "tau"].map((column) => `<th>${column === "tau" ? "τ" : column === "total" ? "Ψ (total)" : esc(column)}</th>`);
  const rows = entries.map(([measure, entry]) => {
    const arrow = entry.orientation < 0 ? " ↓" : " ↑";
    const cells = [
      ...axes.map((axis) => cell(entry, axis, entry.psi?.[axis])),
      cell(entry, "total", entry.psi?.total),
      cell(entry, "tau", entry.tau),
    ];
    const family = families[measure] ? ` <span class="family muted">${esc(families[measure])}</span>` : "";
    return `<tr data-measure="${esc(measure)}" data-family="${esc(families[measure] || "")}"><th title="${entry.orientation < 0 ? "lower" : "higher"} predicts better generalization">${esc(measure)}${arrow}${family}</th>
      ${cells.join("")}<td class="num">${entry.n_models ?? entry.n ?? "–"}</td></tr>`;
  });
  container.innerHTML = `<p class="muted">Kendall coefficients against ${esc(ranking.target)}:
      ${ranking.n_models} scored models, ${ranking.n_models_with_target} with ${esc(ranking.target)}.
      ${ranking.n_left_out ? `${ranking.n_left_out} left out by the training-accuracy protocol (train accuracy below ${ranking.min_train_accuracy}: ${esc(ranking.left_out.map((m) => m.name).join(", "))}).` : ""}
      ${ranking.bootstrap?.n_resamples ? `Intervals: ${Math.round(100 * ranking.bootstrap.level)}% bootstrap, ${ranking.bootstrap.n_resamples} resamples.` : ""}
      Oriented: positive means the measure ranks models the way ${esc(ranking.target)} does (↓: lower predicts better).</p>
    <table class="kendall"><thead><tr><th>measure</th>${head.join("")}<th>n</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
}
