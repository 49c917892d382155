// The hub's HTTP API as the console uses it: the signed-in token, JSON calls, SSE streams.

const TOKEN = "modelhub.token";
const PLAYGROUND_KEY = "modelhub.playgroundKey";

// The token lives in sessionStorage: it survives a reload, not the closing of the tab.
export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  set token(value) { store(TOKEN, value); },
  // "admin" (mha-…), "tenant" (mh-…), "open" (the hub runs with auth off), null: signed out.
  get role() {
    const token = this.token;
    if (token === null) return null;
    if (token === "") return "open";
    return token.startsWith("mha-") ? "admin" : "tenant";
  },
  get isAdmin() { return this.role === "admin" || this.role === "open"; },
  // The API key the playground sends: the tenant's own, or one an admin picked or created.
  get playgroundKey() {
    return this.role === "tenant" ? this.token : sessionStorage.getItem(PLAYGROUND_KEY) || "";
  },
  set playgroundKey(value) { store(PLAYGROUND_KEY, value); },
  signOut() { sessionStorage.removeItem(TOKEN); sessionStorage.removeItem(PLAYGROUND_KEY); },
};

function store(name, value) {
  if (value === null || value === undefined) sessionStorage.removeItem(name);
  else sessionStorage.setItem(name, value);
}

// An error in OpenAI's shape ({error: {message, type, param, code}}), or the transport's.
export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type;
    this.code = error.code;
    this.param = error.param;
  }
}

function headers(token, extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function raiseFor(response) {
  if (response.ok) return response;
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch {
    error = { message: `${response.status} ${response.statusText}` };
  }
  throw new ApiError(response.status, error);
}

// fetch() with the session's token (or `token`), a JSON body, errors raised as ApiError.
export async function call(path, { method = "GET", body, token = session.token, signal } = {}) {
  const init = { method, signal, headers: headers(token) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  return raiseFor(await fetch(path, init));
}

export async function getJSON(path, options) {
  return (await call(path, options)).json();
}

export async function sendJSON(method, path, body, options = {}) {
  return (await call(path, { ...options, method, body })).json();
}

// The data: payloads of a server-sent event stream, parsed as JSON, until [DONE].
export async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

// Saves a response body as a file (a Bearer-authenticated download cannot be a plain link).
export async function download(path, filename) {
  const blob = await (await call(path)).blob();
  const url = URL.createObjectURL(blob);
  const a = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  URL.revokeObjectURL(url);
}
