// #/ : every collection with its model count and probe settings (dataset, split, samples, seed).
import { api, collectionJobs, segment } from "/dashboard/api.js";
import { esc, probeSettings } from "/dashboard/format.js";

export async function renderCollections(root) {
  const { collections } = await api("/v1/collections");
  if (!collections.length) {
    root.innerHTML = `<h1>Collections</h1><p class="muted">No collection yet. Submit a checkpoint with
      <code>gscore submit CKPT --arch ARCH --dataset digits --collection NAME</code>.</p>`;
    return null;
  }
  const jobsByCollection = await Promise.all(collections.map((c) => collectionJobs(c.name, 1)));
  const rows = collections.map((collection, index) => {
    const jobs = jobsByCollection[index];
    const states = {};
    for (const job of jobs) states[job.state] = (states[job.state] || 0) + 1;
    const stateText = Object.entries(states).map(([state, count]) => `<span class="state-${esc(state)}">${count} ${esc(state)}</span>`).join(", ");
    const measures = [...new Set(jobs.flatMap((job) => Object.keys(job.result?.scores || {})))];
    return `<tr data-collection="${esc(collection.name)}">
      <td><a href="#/collections/${segment(collection.name)}">${esc(collection.name)}</a></td>
      <td class="num models">${collection.models}</td>
      <td>${stateText}</td>
      <td>${probeSettings(jobs).map(esc).join("<br>")}</td>
      <td>${esc(measures.join(", "))}</td></tr>`;
  });
  root.innerHTML = `<h1>Collections</h1>
    <table id="collections"><thead><tr><th>collection</th><th>models</th><th>jobs</th>
    <th>probe settings</th><th>measures scored</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  return null;
}
