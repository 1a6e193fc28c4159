// The dashboard's only way to the server: the JSON API under /v1 (same origin).

export class ApiError extends Error {
  constructor(status, problem) {
    const title = problem.title || `HTTP ${status}`;
    super(problem.detail ? `${title}: ${problem.detail}` : title);
    this.status = status;
    this.problem = problem;
  }
}

// The API key (gscore keys create) goes with every request as `Authorization: Bearer`; without one the
// requests go out bare (a keyless service on loopback). It is kept in this tab's sessionStorage (gone when
// the tab closes), and in localStorage only when the user ticks "remember".
export const API_KEY_STORAGE = "gscore.apiKey";

function stored(storage) {
  try {
    return (window[storage].getItem(API_KEY_STORAGE) || "").trim();
  } catch {
    return "";
  }
}

export function apiKey() {
  return stored("sessionStorage") || stored("localStorage");
}

export function keyRemembered() {
  return stored("localStorage") !== "";
}

export function setApiKey(value, remember = false) {
  const key = (value || "").trim();
  try {
    if (key) window.sessionStorage.setItem(API_KEY_STORAGE, key);
    else window.sessionStorage.removeItem(API_KEY_STORAGE);
    if (key && remember) window.localStorage.setItem(API_KEY_STORAGE, key);
    else window.localStorage.removeItem(API_KEY_STORAGE);
  } catch {
    // storage disabled: the key lives as long as the page
  }
}

export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...authHeaders(), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { title: response.statusText, detail: text.slice(0, 300) };
  }
  if (!response.ok) throw new ApiError(response.status, body || {});
  return body;
}

export const segment = (value) => encodeURIComponent(value);

// Every job of a collection (all pages), newest first.
export async function collectionJobs(name, maxPages = 20) {
  const jobs = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page += 1) {
    const query = new URLSearchParams({ collection: name, limit: "200" });
    if (cursor) query.set("cursor", cursor);
    const body = await api(`/v1/jobs?${query}`);
    jobs.push(...body.jobs);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return jobs;
}
