// #/jobs/ID : one job, polled every second until it finishes; its result (scores, status, meta) or error.
import { api, segment } from "/dashboard/api.js";
import { dateTime, esc, num, progressBar } from "/dashboard/format.js";
import { poll } from "/dashboard/poll.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 1000;

function warningList(warnings) {
  if (!warnings || !warnings.length) return "";
  return `<ul class="warnings">${warnings.map((w) => `<li>⚠ ${esc(w)}</li>`).join("")}</ul>`;
}

function scoresTable(result) {
  const status = result.status || {};
  const names = [...new Set([...Object.keys(result.scores || {}), ...Object.keys(status)])];
  const rows = names.map((name) => {
    const value = result.scores?.[name];
    const s = status[name];
    return `<tr data-measure="${esc(name)}"><th>${esc(name)}</th><td class="num">${num(value, 6)}</td>
      <td>${esc(s?.status || (value === null || value === undefined ? "not computed" : "ok"))}</td><td>${esc(s?.reason || "")}</td>
      <td class="measure-warnings">${warningList(s?.warnings)}</td></tr>`;
  });
  return `<table class="scores"><thead><tr><th>measure</th><th>score</th><th>status</th><th>reason</th><th>warnings</th></tr></thead>
    <tbody>${rows.join("")}</tbody></table>`;
}

// Warnings about the whole result (a model that does not fit its training data) and notes on skipped measures.
function resultNotices(meta) {
  const warnings = (meta?.result_warnings || []).map((w) => `<p class="result-warning" role="note">⚠ ${esc(w)}</p>`);
  const notes = (meta?.notes || []).map((n) => `<p class="muted note">${esc(n)}</p>`);
  return warnings.join("") + notes.join("");
}

function draw(root, job) {
  const spec = job.spec || {};
  const collection = job.collection ? `<a href="#/collections/${segment(job.collection)}">${esc(job.collection)}</a>` : "–";
  const cancel = FINISHED.has(job.state) || job.cancel_requested ? "" : '<button class="cancel">Cancel job</button>';
  let outcome = "";
  if (job.error) {
    outcome = `<h2>Error</h2><div class="error" role="alert"><strong>${esc(job.error.title)}</strong>
      <p class="detail">${esc(job.error.detail)}</p><p class="muted">${esc(job.error.type)}</p></div>`;
  } else if (job.result) {
    outcome = `<h2>Scores</h2>${resultNotices(job.result.meta)}${scoresTable(job.result)}<h2>Meta</h2><pre>${esc(JSON.stringify(job.result.meta, null, 2))}</pre>`;
  }
  root.innerHTML = `<h1>Job <code>${esc(job.id)}</code></h1>
    <dl class="fields">
      <dt>state</dt><dd class="state state-${esc(job.state)}">${esc(job.state)}${job.cancel_requested && !FINISHED.has(job.state) ? " (cancel requested)" : ""} ${cancel}</dd>
      <dt>progress</dt><dd class="progress">${progressBar(job) || "–"}</dd>
      <dt>collection</dt><dd>${collection}</dd><dt>model</dt><dd>${esc(job.model_name)}</dd>
      <dt>hyperparameters</dt><dd>${esc(JSON.stringify(job.hyperparameters))}</dd>
      <dt>accuracies</dt><dd>test ${num(job.test_accuracy)}, train ${num(job.train_accuracy)}</dd>
      <dt>probe</dt><dd>${esc(spec.dataset)} ${esc(spec.split)}, ${spec.samples_per_class == null ? "all samples" : `${spec.samples_per_class}/class`}, seed ${esc(spec.seed)}</dd>
      <dt>measures</dt><dd>${esc((spec.measures || ["default"]).join(", "))}</dd>
      <dt>attempts</dt><dd>${job.attempts}</dd>
      <dt>created / started / finished</dt><dd>${esc(dateTime(job.created_at))} / ${esc(dateTime(job.started_at))} / ${esc(dateTime(job.finished_at))}</dd>
      <dt>checkpoint sha256</dt><dd><code>${esc(job.checkpoint_sha256)}</code></dd>
    </dl>${outcome}`;
  const button = root.querySelector("button.cancel");
  if (button) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        draw(root, await api(`/v1/jobs/${segment(job.id)}`, { method: "DELETE" }));
      } catch (error) {
        button.insertAdjacentHTML("afterend", ` <span class="error">${esc(error.message)}</span>`);
      }
    });
  }
}

export async function renderJob(root, id) {
  const path = `/v1/jobs/${segment(id)}`;
  const job = await api(path);
  draw(root, job);
  if (FINISHED.has(job.state)) return null;
  return poll(async () => {
    const latest = await api(path);
    draw(root, latest);
    return FINISHED.has(latest.state);
  }, POLL_MS);
}
