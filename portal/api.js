// Calls to the bridge's REST API.  The credential is the HttpOnly cookie POST /auth set: this code never
// sees the token after the sign-in form has sent it, and never stores it anywhere.

export class ApiError extends Error {
  constructor(status, detail, path) {
    super(`${status} ${detail}`);
    this.status = status;
    this.detail = detail;
    this.path = path;
  }
}

const unauthorizedListeners = new Set();

/** Called with the ApiError whenever the bridge answers 401 (the cookie is missing or no longer valid). */
export function onUnauthorized(fn) {
  unauthorizedListeners.add(fn);
  return () => unauthorizedListeners.delete(fn);
}

function detailOf(body, fallback) {
  if (body && typeof body === "object" && "detail" in body) {
    const d = body.detail;
    if (Array.isArray(d)) return d.map((e) => (e && e.msg ? `${(e.loc || []).join(".")}: ${e.msg}` : JSON.stringify(e))).join("; ");
    return typeof d === "string" ? d : JSON.stringify(d);
  }
  return fallback;
}

export function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
  const qs = params.toString();
  return qs ? `${path}${path.includes("?") ? "&" : "?"}${qs}` : path;
}

/** fetch() on the bridge's own origin with the cookie; throws ApiError for an error status. */
export async function request(method, path, { json, body, headers = {}, query, signal, raw = false } = {}) {
  if (!path.startsWith("/")) throw new Error(`not a bridge path: ${path}`);
  const init = { method, credentials: "same-origin", headers: { ...headers }, signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["content-type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const url = withQuery(path, query);
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "the bridge cannot be reached", url);
  }
  if (!response.ok) {
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
    const error = new ApiError(response.status, detailOf(payload, response.statusText || "error"), url);
    if (response.status === 401) for (const fn of unauthorizedListeners) fn(error);
    throw error;
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const getJSON = (path, query, opts = {}) => request("GET", path, { ...opts, query });
export const postJSON = (path, json, opts = {}) => request("POST", path, { ...opts, json });

/** Sign in: POST /auth with the token; the bridge answers with the HttpOnly cookie. */
export async function signIn(token) {
  return request("POST", "/auth", { json: { token } });
}

/** Whether the browser holds a valid cookie (or the bridge runs without auth): GET /auth says so. */
export async function signedIn() {
  const answer = await request("GET", "/auth");
  return Boolean(answer && answer.authenticated === true);
}

/** Sign out: DELETE /auth clears the cookie in this browser. */
export async function signOut() {
  return request("DELETE", "/auth");
}

export function edgePath(edge, plugin, rest = "") {
  return `/${encodeURIComponent(edge)}/${encodeURIComponent(plugin)}/${rest}`;
}

/**
 * One plugin of one edge: calls relative to /{edge}/{plugin}/, and the caller's session (registered on first
 * use, registered again if the plugin forgot or expired it).
 */
export class PluginApi {
  constructor(edge, plugin, { sessionOptions = {}, keepSession = false } = {}) {
    this.edge = edge;
    this.plugin = plugin;
    this.base = edgePath(edge, plugin);
    this.sessionOptions = sessionOptions;
    // keepSession: never unregistered when the page goes (rhapsody: closing a session cancels its tasks)
    this.keepSession = keepSession;
    this._sid = null;
    this._registering = null;
  }

  path(rest) {
    return this.base + String(rest).replace(/^\/+/, "");
  }

  request(method, rest, opts = {}) {
    return request(method, this.path(rest), opts);
  }

  get(rest, query, opts = {}) {
    return request("GET", this.path(rest), { ...opts, query });
  }

  post(rest, json, opts = {}) {
    return request("POST", this.path(rest), { ...opts, json });
  }

  get sid() {
    return this._sid;
  }

  /** The session id (registers one if needed). */
  async session() {
    if (this._sid) return this._sid;
    if (!this._registering) {
      this._registering = this.post("register_session", { ttl: 3600, ...this.sessionOptions })
        .then((answer) => {
          this._sid = answer.sid;
          this.registered = answer;
          return answer.sid;
        })
        .finally(() => {
          this._registering = null;
        });
    }
    return this._registering;
  }

  /** Use an existing session of this caller (e.g. one a script made) instead of registering one. */
  adopt(sid) {
    this._sid = sid;
  }

  /** fn(sid) with a live session; once more with a new session if the plugin answers 404/410 for it. */
  async withSession(fn) {
    const sid = await this.session();
    try {
      return await fn(sid);
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 410) && String(err.detail).includes(sid)) {
        if (this._sid === sid) this._sid = null;
        return fn(await this.session());
      }
      throw err;
    }
  }

  /** GET {name}/{sid}/{rest...} with the session. */
  sget(name, rest = "", query, opts) {
    return this.withSession((sid) => this.get(`${name}/${sid}${rest ? `/${rest}` : ""}`, query, opts));
  }

  /** POST {name}/{sid}/{rest...} with the session. */
  spost(name, rest = "", json, opts) {
    return this.withSession((sid) => this.post(`${name}/${sid}${rest ? `/${rest}` : ""}`, json, opts));
  }

  /** Give the session back (best effort; keepalive so it also works while the page unloads). */
  close() {
    const sid = this._sid;
    this._sid = null;
    if (!sid || this.keepSession) return;
    fetch(this.path(`unregister_session/${sid}`), { method: "POST", credentials: "same-origin", keepalive: true }).catch(
      () => {},
    );
  }
}

/** Segment-encode a value for a path. */
export const seg = (s) => encodeURIComponent(String(s));
