// The dashboard's only way to the API: the token from sessionStorage in an Authorization header.
// No cookie carries it, so a page of another site can make no request in the user's name.

const TOKEN_KEY = "taskbroker.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function rememberToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

export function signInAgain() {
  forgetToken();
  if (location.pathname !== "/ui/sign-in") {
    location.assign("/ui/sign-in");
  }
}

function url(path, query) {
  const target = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") target.searchParams.set(name, value);
  }
  return target;
}

// One API call; its JSON answer, or an ApiError with the API's own `detail`. A 401 (the token is
// gone: revoked, expired) sends the user back to sign in, unless `quiet401` (sign-in itself).
export async function call(method, path, { body, query, quiet401 = false, bearer } = {}) {
  const headers = { Accept: "application/json" };
  const secret = bearer || token();
  if (secret) headers.Authorization = `Bearer ${secret}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url(path, query), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) {
    if (response.status === 401 && !quiet401) signInAgain();
    throw new ApiError(response.status, data && data.detail !== undefined ? data.detail : data);
  }
  return data;
}

export const get = (path, query) => call("GET", path, { query });
export const post = (path, body) => call("POST", path, { body });

// A readable line out of an ApiError's detail (FastAPI's 422 is a list of problems).
export function describe(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  const detail = error.detail;
  if (Array.isArray(detail)) {
    return detail.map((problem) => `${(problem.loc || []).slice(1).join(".")}: ${problem.msg}`).join("; ");
  }
  if (detail && typeof detail === "object") return JSON.stringify(detail);
  return `${detail || "request failed"} (HTTP ${error.status})`;
}
