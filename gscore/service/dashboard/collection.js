// #/collections/NAME : models table, Kendall table, one scatter plot per measure; links to the PNG plot.
import { api, collectionJobs, segment } from "/dashboard/api.js";
import { esc, probeSettings } from "/dashboard/format.js";
import { kendallTable } from "/dashboard/kendall.js";
import { modelsTable } from "/dashboard/models-table.js";
import { scatterPlots } from "/dashboard/scatter.js";

export async function renderCollection(root, name) {
  const path = `/v1/collections/${segment(name)}`;
  const [collection, jobs, catalog] = await Promise.all([api(path), collectionJobs(name), api("/v1/measures")]);
  const anyScored = collection.models.some((m) => m.state === "succeeded" && m.scores);
  const ranking = anyScored ? await api(`${path}/ranking`) : { axes: [], measures: {}, target: "test_accuracy" };
  const jobsById = new Map(jobs.map((job) => [job.id, job]));
  const models = collection.models.map((model) => {
    const result = jobsById.get(model.job_id)?.result;
    return { ...model, status: result?.status || {}, result_warnings: result?.meta?.result_warnings || [] };
  });
  const axes = [...new Set(collection.models.flatMap((m) => Object.keys(m.hyperparameters || {})))];
  const measures = Object.keys(ranking.measures);
  const orientations = Object.fromEntries(catalog.measures.map((m) => [m.name, m.orientation]));
  const families = Object.fromEntries(catalog.measures.map((m) => [m.name, m.family]));
  for (const [measure, entry] of Object.entries(ranking.measures)) orientations[measure] = entry.orientation;
  const current = collection.models.map((m) => jobsById.get(m.job_id)).filter(Boolean);

  root.innerHTML = `<h1>Collection <span class="name">${esc(name)}</span></h1>
    <p class="muted">${collection.models.length} models · probe: ${probeSettings(current).map(esc).join("; ")} ·
      <a href="#/jobs?collection=${segment(name)}">jobs</a> ·
      <a href="${path}/ranking">ranking JSON</a> · <a href="${path}/plot.png">PNG plot</a></p>
    <h2>Models</h2><section id="models"></section>
    <h2>Kendall coefficients (Table 1)</h2><section id="kendall"></section>
    <h2>Measures against test accuracy (Figure 3)</h2><section id="plots"></section>`;
  modelsTable(root.querySelector("#models"), models, axes, measures);
  kendallTable(root.querySelector("#kendall"), ranking, families);
  if (measures.length) scatterPlots(root.querySelector("#plots"), models, ranking, measures, axes, orientations);
  else root.querySelector("#plots").innerHTML = '<p class="muted">No scored model yet.</p>';
  return null;
}
