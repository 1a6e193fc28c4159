// Hash router: #/ collections, #/collections/NAME, #/jobs, #/jobs/ID. Each view renders into <main>
// and returns a stop function (for its polling) that runs when the route changes.
import { apiKey, keyRemembered, setApiKey } from "/dashboard/api.js";
import { esc } from "/dashboard/format.js";
import { renderCollections } from "/dashboard/collections.js";
import { renderCollection } from "/dashboard/collection.js";
import { renderJobs } from "/dashboard/jobs.js";
import { renderJob } from "/dashboard/job.js";

const view = document.getElementById("view");
let stopCurrent = null;

function route(hash) {
  const path = hash.replace(/^#/, "").split("?")[0] || "/";
  let match = path.match(/^\/collections\/(.+)$/);
  if (match) return { nav: "collections", render: (el) => renderCollection(el, decodeURIComponent(match[1])) };
  match = path.match(/^\/jobs\/(.+)$/);
  if (match) return { nav: "jobs", render: (el) => renderJob(el, decodeURIComponent(match[1])) };
  if (path === "/jobs") return { nav: "jobs", render: renderJobs };
  return { nav: "collections", render: renderCollections };
}

async function show() {
  if (stopCurrent) stopCurrent();
  stopCurrent = null;
  const { nav, render } = route(window.location.hash);
  for (const link of document.querySelectorAll("header nav a[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === nav);
  }
  view.innerHTML = '<p class="muted">Loading…</p>';
  try {
    stopCurrent = (await render(view)) || null;
  } catch (error) {
    view.innerHTML = `<div class="error" role="alert"><strong>Could not load this page.</strong> ${esc(error.message)}</div>`;
  }
}

// The API key field: kept for this tab (sessionStorage), or in localStorage when "remember" is ticked
// (api.js sends it as `Authorization: Bearer`), then the view reloads.
const keyForm = document.getElementById("api-key-form");
const keyInput = document.getElementById("api-key");
const keyRemember = document.getElementById("api-key-remember");
if (keyForm && keyInput) {
  keyInput.value = apiKey();
  if (keyRemember) keyRemember.checked = keyRemembered();
  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(keyInput.value, Boolean(keyRemember && keyRemember.checked));
    show();
  });
}

window.addEventListener("hashchange", show);
show();
