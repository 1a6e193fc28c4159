// The dashboard's only way to the server: the JSON API under /v1 (same origin).

export class ApiError extends Error {
  constructor(status, problem) {
    const title = problem.title || `HTTP ${status}`;
    super(problem.detail ? `${title}: ${problem.detail}` : title);
    this.status = status;
    this.problem = problem;
  }
}

export async function api(path, options = {}) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, ...options });
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
