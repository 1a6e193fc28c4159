// #/jobs : jobs newest first with state and live progress, polled every second while any is unfinished.
import { api, segment } from "/dashboard/api.js";
import { dateTime, esc, progressBar } from "/dashboard/format.js";
import { poll } from "/dashboard/poll.js";

const STATES = ["queued", "running", "succeeded", "failed", "cancelled"];
const POLL_MS = 1000;

function row(job) {
  const collection = job.collection ? `<a href="#/collections/${segment(job.collection)}">${esc(job.collection)}</a>` : "–";
  return `<tr data-job="${esc(job.id)}">
    <td><a href="#/jobs/${segment(job.id)}"><code>${esc(job.id.slice(0, 12))}</code></a></td>
    <td>${collection}</td><td>${esc(job.model_name)}</td>
    <td class="state state-${esc(job.state)}">${esc(job.state)}${job.cancel_requested && job.state === "running" ? " (cancelling)" : ""}</td>
    <td class="progress">${progressBar(job)}</td>
    <td class="num">${job.attempts}</td><td>${esc(dateTime(job.created_at))}</td></tr>`;
}

export async function renderJobs(root) {
  const params = new URLSearchParams(window.location.hash.split("?")[1] || "");
  root.innerHTML = `<h1>Jobs</h1>
    <div class="controls">
      <label>State <select class="state"><option value="">any</option>${STATES.map((s) => `<option>${s}</option>`).join("")}</select></label>
      <label>Collection <input type="search" class="collection" value="${esc(params.get("collection") || "")}"></label>
      <span class="muted updated"></span></div>
    <table id="jobs"><thead><tr><th>job</th><th>collection</th><th>model</th><th>state</th><th>progress</th>
      <th>attempts</th><th>created</th></tr></thead><tbody></tbody></table>`;
  const state = root.querySelector(".state");
  const collection = root.querySelector(".collection");
  state.value = params.get("state") || "";
  const body = root.querySelector("tbody");
  const updated = root.querySelector(".updated");

  const refresh = async () => {
    const query = new URLSearchParams({ limit: "100" });
    if (state.value) query.set("state", state.value);
    if (collection.value.trim()) query.set("collection", collection.value.trim());
    const page = await api(`/v1/jobs?${query}`);
    body.innerHTML = page.jobs.map(row).join("") || '<tr><td colspan="7" class="muted">No job.</td></tr>';
    updated.textContent = `updated ${new Date().toLocaleTimeString()}${page.next_cursor ? " · newest 100 shown" : ""}`;
    return false; // keep polling: new jobs may arrive
  };
  state.addEventListener("change", refresh);
  collection.addEventListener("change", refresh);
  await refresh();
  return poll(refresh, POLL_MS);
}
