// The bridge's event stream (GET /events, Server-Sent Events) for the whole page.
//
// EventSource resends Last-Event-ID by itself when it reconnects after a drop.  When the browser gives up
// (an HTTP error such as 401, or a stream it cannot read), we reconnect ourselves with ?last_event_id=N, so
// the bridge still replays what we missed.  Each (re)connection starts with a topology snapshot; a `gap`
// says events were lost and the listeners re-read what they show.

/** the bridge's event topics (profile.py) and the name this feed emits each under */
const EVENT_KINDS = { topology: "topology", topology_change: "change", notification: "notification", gap: "gap" };

export class EventFeed {
  constructor(url = "/events") {
    this.url = url;
    this.lastId = null;
    this.online = false;
    this.es = null;
    this.timer = null;
    this.retryDelay = 1000;
    this.stopped = true;
    this.listeners = new Map();
    this.connects = 0;
  }

  /** kind: topology, change, notification, gap, status (online true/false), unauthorized.  Returns an unsubscribe. */
  on(kind, fn) {
    if (!this.listeners.has(kind)) this.listeners.set(kind, new Set());
    this.listeners.get(kind).add(fn);
    return () => this.listeners.get(kind).delete(fn);
  }

  emit(kind, data) {
    for (const fn of [...(this.listeners.get(kind) || [])]) {
      try {
        fn(data);
      } catch (err) {
        console.error(`event listener (${kind}) failed`, err);
      }
    }
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
    this.setOnline(false);
  }

  open() {
    if (this.stopped) return;
    const url = this.lastId === null ? this.url : `${this.url}?last_event_id=${encodeURIComponent(this.lastId)}`;
    const es = new EventSource(url); // same origin: the cookie goes along
    this.es = es;
    this.connects += 1;
    es.onopen = () => {
      this.retryDelay = 1000;
      this.setOnline(true);
    };
    es.onmessage = (ev) => this.handle(ev);
    es.onerror = () => {
      this.setOnline(false);
      if (es.readyState === EventSource.CLOSED && this.es === es) {
        this.es = null;
        this.recover();
      }
    };
  }

  async recover() {
    // the browser will not retry this one: find out why, then try again with our own back-off
    try {
      const r = await fetch("/edges", { method: "HEAD", credentials: "same-origin" });
      if (r.status === 401) {
        this.stop();
        this.emit("unauthorized", null);
        return;
      }
    } catch {
      // unreachable: keep trying
    }
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), this.retryDelay);
    this.retryDelay = Math.min(this.retryDelay * 2, 15000);
  }

  setOnline(online) {
    if (this.online === online) return;
    this.online = online;
    this.emit("status", online);
  }

  handle(ev) {
    if (ev.lastEventId) this.lastId = ev.lastEventId;
    this.setOnline(true);
    let message;
    try {
      message = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!message || typeof message !== "object") return;
    const kind = Object.hasOwn(EVENT_KINDS, message.topic) ? EVENT_KINDS[message.topic] : null;
    if (kind) this.emit(kind, message.data || {});
  }
}
