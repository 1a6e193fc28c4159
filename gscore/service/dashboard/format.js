// Small pure helpers: escaping, number formatting, confidence intervals, probe-setting summaries.

export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

export function num(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (value !== 0 && (Math.abs(value) >= 1e5 || Math.abs(value) < 1e-3)) return value.toExponential(3);
  return Number(value.toFixed(digits)).toString();
}

export function hyper(value) {
  if (value === null || value === undefined) return "(not set)";
  if (Array.isArray(value)) return `(${value.join(", ")})`;
  return String(value);
}

// [low, high] of coefficient `key` ("tau", an axis, "total") of a ranking entry, or null.
// Same conventions as gscore.ranking.plots.coefficient_interval.
export function interval(entry, key) {
  let low = entry.ci_low;
  let high = entry.ci_high;
  if (low && typeof low === "object" && high && typeof high === "object") {
    low = low[key];
    high = high[key];
  } else if (key === "tau" && !(typeof low === "number" && typeof high === "number")) {
    low = entry.tau_ci_low;
    high = entry.tau_ci_high;
  } else if (key !== "tau") {
    return null;
  }
  return typeof low === "number" && typeof high === "number" ? [low, high] : null;
}

export function dateTime(value) {
  if (!value) return "–";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

// "digits train, 10/class, seed 0" for each distinct probe setting of a list of jobs.
export function probeSettings(jobs) {
  const seen = new Map();
  for (const job of jobs) {
    const spec = job.spec || {};
    const perClass = spec.samples_per_class == null ? "all samples" : `${spec.samples_per_class}/class`;
    const text = `${spec.dataset ?? "?"} ${spec.split ?? "train"}, ${perClass}, seed ${spec.seed ?? 0}`;
    seen.set(text, (seen.get(text) || 0) + 1);
  }
  return [...seen.entries()].map(([text, count]) => (seen.size > 1 ? `${text} (${count})` : text));
}

export function progressText(progress) {
  if (!progress || !progress.stage) return "";
  return progress.total ? `${progress.stage} ${progress.done}/${progress.total}` : progress.stage;
}

export function progressBar(job) {
  const progress = job.progress || {};
  if (job.state !== "running") return "";
  const label = esc(progressText(progress));
  if (!progress.total) return `<progress></progress> <span class="stage">${label}</span>`;
  return `<progress max="${progress.total}" value="${progress.done}"></progress> <span class="stage">${label}</span>`;
}
