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

/** Whether `path` is a path on this origin ("/x", never "//host" or "/\\host", which a browser reads as a host). */
export function isOwnPath(path) {
  if (typeof path !== "string" || !path.startsWith("/")) return false;
  try {
    return new URL(path, location.origin).origin === location.origin;
  } catch {
    return false;
  }
}

/** fetch() on the bridge's own origin with the cookie; throws ApiError for an error status. */
export async function request(method, path, { json, body, headers = {}, query, signal, raw = false } = {}) {
  if (!isOwnPath(path)) throw new Error(`not a bridge path: ${path}`);
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

/** One path segment: percent-encoded, and never "." or ".." (a browser would fold those into the path). */
function segment(value) {
  const s = String(value);
  if (s === "" || s === "." || s === "..") throw new Error(`cannot be a path segment: ${JSON.stringify(s)}`);
  return encodeURIComponent(s);
}

export function edgePath(edge, plugin, rest = "") {
  return `/${segment(edge)}/${segment(plugin)}/${rest}`;
}

/**
 * One plugin of one edge: calls relative to /{edge}/{plugin}/, and the caller's session (registered on first
 * use, registered again if the plugin forgot or expired it).
 *
 * Every path it makes stays under /{edge}/{plugin}/: the plugin (which may be hostile) chooses its session id
 * and, for a page built from its ui_config, the routes the page calls, and a browser folds "..", "%2e%2e" and
 * "\\" in a path before it sends the request.  So the session id is always one encoded segment, and a path
 * that would leave the plugin (to the bridge's routes, such as POST /bridge/terminate, or to another edge's,
 * with the user's cookie) is refused before any request.
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

  /** `rest` under this plugin's base; throws when the browser would send it elsewhere. */
  path(rest) {
    const path = this.base + String(rest).replace(/^\/+/, "");
    let url = null;
    try {
      url = new URL(path, location.origin);
    } catch {
      url = null;
    }
    if (!url || url.origin !== location.origin || !url.pathname.startsWith(this.base)) {
      throw new Error(`not a route of ${this.plugin} on ${this.edge}: ${rest}`);
    }
    return path;
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
          const sid = answer && answer.sid;
          if (typeof sid !== "string" || !sid) throw new ApiError(502, "register_session: no session id in the answer", this.base);
          this._sid = sid;
          this.registered = answer;
          return sid;
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
    return this.withSession((sid) => this.get(`${name}/${encodeURIComponent(sid)}${rest ? `/${rest}` : ""}`, query, opts));
  }

  /** POST {name}/{sid}/{rest...} with the session. */
  spost(name, rest = "", json, opts) {
    return this.withSession((sid) => this.post(`${name}/${encodeURIComponent(sid)}${rest ? `/${rest}` : ""}`, json, opts));
  }

  /** Give the session back (best effort; keepalive so it also works while the page unloads). */
  close() {
    const sid = this._sid;
    this._sid = null;
    if (!sid || this.keepSession) return;
    let path;
    try {
      path = this.path(`unregister_session/${encodeURIComponent(sid)}`);
    } catch {
      return;
    }
    fetch(path, { method: "POST", credentials: "same-origin", keepalive: true }).catch(() => {});
  }
}

/** Segment-encode a value for a path. */
export const seg = (s) => encodeURIComponent(String(s));
