// The models table of a collection: one row per model, sortable by any column (click its header) and
// filtered by a text that must appear in the row (and by state).
import { esc, hyper, num } from "/dashboard/format.js";

const OK_STATUSES = new Set(["ok", "computed", "succeeded"]);

// A ⚠ with the number of warnings; hovering it shows them, one per line.
function warningFlag(warnings, className) {
  if (!warnings || !warnings.length) return "";
  return ` <span class="${className}" data-warnings="${esc(JSON.stringify(warnings))}" title="${esc(warnings.join("\n"))}">⚠${warnings.length > 1 ? ` ${warnings.length}` : ""}</span>`;
}

function scoreCell(model, measure) {
  const value = model.scores?.[measure];
  const status = model.status?.[measure];
  const flagged = status && !OK_STATUSES.has(status.status);
  const title = status ? `${status.status}${status.reason ? `: ${status.reason}` : ""}` : "";
  const warnings = warningFlag(status?.warnings, "warning-flag");
  if (value === null || value === undefined) {
    const text = status ? status.status : model.state === "succeeded" ? "not computed" : "–";
    return { sort: null, html: `<td class="num na" data-measure="${esc(measure)}" title="${esc(title)}">${esc(text)}${warnings}</td>` };
  }
  const flag = flagged ? ` <span class="status-flag" title="${esc(title)}">⚠ ${esc(status.status)}</span>` : "";
  return {
    sort: value,
    html: `<td class="num" data-measure="${esc(measure)}" data-value="${value}" title="${esc(title)}">${num(value)}${flag}${warnings}</td>`,
  };
}

// models: [{model_name, job_id, state, hyperparameters, test_accuracy, train_accuracy, scores, status,
// result_warnings}]: a measure's warnings flag its cell, the result's (an underfit model) its name.
export function modelsTable(container, models, axes, measures) {
  const columns = [
    { key: "model", label: "model" },
    { key: "state", label: "state" },
    ...axes.map((axis) => ({ key: `hp:${axis}`, label: axis })),
    { key: "test_accuracy", label: "test acc" },
    { key: "train_accuracy", label: "train acc" },
    ...measures.map((measure) => ({ key: `m:${measure}`, label: measure })),
  ];
  const rows = models.map((model) => {
    const cells = {
      model: {
        sort: model.model_name,
        html: `<td class="model"><a href="#/jobs/${encodeURIComponent(model.job_id)}">${esc(model.model_name)}</a>${warningFlag(model.result_warnings, "result-warning-flag")}</td>`,
      },
      state: { sort: model.state, html: `<td class="state-${esc(model.state)}">${esc(model.state)}</td>` },
      test_accuracy: { sort: model.test_accuracy, html: `<td class="num">${num(model.test_accuracy)}</td>` },
      train_accuracy: { sort: model.train_accuracy, html: `<td class="num">${num(model.train_accuracy)}</td>` },
    };
    for (const axis of axes) {
      const value = model.hyperparameters?.[axis];
      cells[`hp:${axis}`] = { sort: value ?? null, html: `<td class="num">${esc(hyper(value))}</td>` };
    }
    for (const measure of measures) cells[`m:${measure}`] = scoreCell(model, measure);
    const text = [model.model_name, model.state, ...axes.map((a) => hyper(model.hyperparameters?.[a]))].join(" ").toLowerCase();
    return { model, cells, text };
  });

  const states = [...new Set(models.map((m) => m.state))];
  container.innerHTML = `<div class="controls">
      <label>Filter <input type="search" class="filter" placeholder="model, state or hyperparameter"></label>
      <label>State <select class="state-filter"><option value="">any</option>${states.map((s) => `<option>${esc(s)}</option>`).join("")}</select></label>
      <span class="muted count"></span></div>
    <table class="models"><thead><tr>${columns.map((c) => `<th class="sortable" data-key="${esc(c.key)}" aria-sort="none">${esc(c.label)}</th>`).join("")}</tr></thead>
    <tbody></tbody></table>`;
  const body = container.querySelector("tbody");
  const filter = container.querySelector(".filter");
  const stateFilter = container.querySelector(".state-filter");
  const count = container.querySelector(".count");
  let sortKey = null;
  let direction = 1;

  const compare = (a, b) => {
    const x = a.cells[sortKey].sort;
    const y = b.cells[sortKey].sort;
    if (x === y) return 0;
    if (x === null || x === undefined) return 1; // missing values last, either direction
    if (y === null || y === undefined) return -1;
    if (typeof x === "number" && typeof y === "number") return direction * (x - y);
    return direction * String(x).localeCompare(String(y), undefined, { numeric: true });
  };

  const draw = () => {
    const needle = filter.value.trim().toLowerCase();
    const state = stateFilter.value;
    let shown = rows.filter((row) => (!needle || row.text.includes(needle)) && (!state || row.model.state === state));
    if (sortKey) shown = [...shown].sort(compare);
    body.innerHTML = shown
      .map((row) => `<tr data-model="${esc(row.model.model_name)}">${columns.map((c) => row.cells[c.key].html).join("")}</tr>`)
      .join("");
    count.textContent = `${shown.length} of ${rows.length} models`;
  };

  for (const header of container.querySelectorAll("th.sortable")) {
    header.addEventListener("click", () => {
      direction = sortKey === header.dataset.key ? -direction : 1;
      sortKey = header.dataset.key;
      for (const other of container.querySelectorAll("th.sortable")) other.setAttribute("aria-sort", "none");
      header.setAttribute("aria-sort", direction > 0 ? "ascending" : "descending");
      draw();
    });
  }
  filter.addEventListener("input", draw);
  stateFilter.addEventListener("change", draw);
  draw();
}
