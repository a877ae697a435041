// roomcast client: a dependency-free ES module for browsers and Node (>= 20), speaking
// docs/protocol.md. It owns one WebSocket at a time and hides its replacements: requests are
// promises, rooms are objects with events, a silent connection is probed with `ping`, a lost
// one is reopened with backoff (or after the server's `goaway` hint) and every joined room is
// resumed with `since`/`epoch`, so the app sees each message once and in order, and is told
// when messages could not be recovered.

/** The subprotocol the server selects; a token rides next to it as `bearer.<jwt>`. */
export const SUBPROTOCOL = "roomcast.v1";

/** Close codes the client acts on (docs/protocol.md, "Close codes"). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  SLOW_CONSUMER: 4000,
  TOKEN_EXPIRED: 4001,
  DISCONNECTED: 4003,
  HEARTBEAT_TIMEOUT: 4008,
  RATE_LIMITED: 4029,
});

/** The defaults of every option; see roomcast.d.ts for what each means. */
export const DEFAULTS = Object.freeze({
  requestTimeoutMs: 10_000,
  connectTimeoutMs: 10_000,
  heartbeat: Object.freeze({ idleMs: null, timeoutMs: 10_000 }),
  reconnect: Object.freeze({ initialDelayMs: 500, maxDelayMs: 30_000, factor: 2, jitter: 0.5 }),
  autoRefresh: true,
  refreshBeforeMs: 30_000,
  publishRetries: 3,
});

// A publish whose answer was lost, or that the server could not order, is sent again with the
// same publish key after this long (doubling, with jitter), so the server applies it once.
const PUBLISH_RETRY_DELAY_MS = 250;

// A member list the server refused (rate limited, Redis unavailable) is asked for again after
// this long.
const USERS_RETRY_DELAY_MS = 500;

/** A fresh publish key: 128 random bits in hex (the server's naming rule allows hex). */
function newPublishKey() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// A session that lived this long was healthy: the next reconnect starts the backoff afresh.
// Shorter-lived sessions keep climbing, so a server that accepts and drops at once is not
// hammered.
const STABLE_SESSION_MS = 10_000;
// Close 4029 says "back off": never come back sooner than this.
const RATE_LIMIT_MIN_DELAY_MS = 5_000;

/**
 * A failed request or a session-level problem. `code` is the server's error code
 * (docs/protocol.md, "Errors") or one of the client's own: `disconnected` (the connection
 * dropped before the reply: the request may or may not have been done), `timeout`,
 * `closed` (the client was closed), `bad_frame` (the server sent something unreadable).
 */
export class RoomcastError extends Error {
  constructor(code, message, frame) {
    super(message || code);
    this.name = "RoomcastError";
    this.code = code;
    this.frame = frame;
    // With code "denied": the application's backend's own code (docs/backend.md).
    this.appCode = frame?.app_code;
  }
}

/** A minimal event emitter: `on` returns the function that removes the listener. */
class Emitter {
  #listeners = new Map();

  on(event, fn) {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  once(event, fn) {
    const off = this.on(event, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  off(event, fn) {
    this.#listeners.get(event)?.delete(fn);
  }

  emit(event, ...args) {
    for (const fn of [...(this.#listeners.get(event) ?? [])]) {
      try {
        fn(...args);
      } catch (err) {
        // A throwing listener must not break frame handling; report it like the platform does.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

/** `exp` (unix seconds) of a JWT, or null when it has none or cannot be read. */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part + "===".slice((part.length + 3) % 4))).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

/** The `ws:`/`wss:` URL of the endpoint: http(s) becomes ws(s), a bare origin gets `/ws`. */
function endpoint(url, user) {
  const base = globalThis.location?.href;
  const u = base ? new URL(url, base) : new URL(url);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  if (u.pathname === "/") u.pathname = "/ws";
  if (user != null) u.searchParams.set("user", user);
  return u.toString();
}

/**
 * One room as the app sees it: membership that survives reconnects, the last offset delivered
 * and the room's epoch (what a resume needs), events, and the requests that concern the room.
 * Get one with `client.room(name)` or `client.join(name)`.
 */
export class Room extends Emitter {
  /** @param {Roomcast} client */
  constructor(client, name) {
    super();
    this.client = client;
    this.name = name;
    /** "left" | "joining" | "joined" */
    this.state = "left";
    /** The room's history, from the last `joined`; null before the first. */
    this.epoch = null;
    /** The offset of the last message delivered (or of the join point); null before joining. */
    this.offset = null;
    /** Whether presence events were asked for (and `users` is kept). */
    this.presence = false;
    /** The members, sorted, while joined with presence; null otherwise. */
    this.users = null;
    this._waiters = [];
    // `rewind` asked for by the last join(); the join point while its messages are awaited.
    this._rewind = 0;
    this._rewindTop = null;
    // The `seq` of the last presence event `users` reflects; events at or below it are old.
    this._presenceSeq = 0;
    // Presence events read while the list is being loaded, applied after it by `seq`.
    this._earlyPresence = null;
  }

  /**
   * Joins the room. Options: `presence` (receive presence events and keep `users`),
   * `since`+`epoch` to resume from a position the app stored (e.g. across page loads), or
   * `rewind: N` to receive up to the room's N latest messages (as `message` events, oldest
   * first) right before live ones. Reconnects resume from there, never rewind again.
   * Resolves with the `joined` frame once the server answered (waiting through reconnects).
   */
  join(options = {}) {
    if (this.state !== "left") {
      return Promise.reject(new RoomcastError("bad_request", `already joined ${this.name}`));
    }
    this.presence = Boolean(options.presence);
    this._rewind = options.rewind > 0 ? options.rewind : 0;
    this._rewindTop = null;
    if (options.since != null || options.epoch != null) {
      this.offset = options.since ?? null;
      this.epoch = options.epoch ?? null;
    } else {
      this.offset = null;
      this.epoch = null;
    }
    this.state = "joining";
    const done = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    this.client._roomWantsJoin(this);
    return done;
  }

  /** Leaves the room; nothing more is delivered for it. */
  async leave() {
    if (this.state === "left") return;
    this.state = "left";
    this.users = null;
    this._settle(new RoomcastError("closed", `left ${this.name} while joining`));
    if (this.client.state !== "open") return; // a new connection will simply not rejoin it
    try {
      await this.client.request({ type: "leave", room: this.name });
    } catch (err) {
      // The session is not in the room either way.
      if (err.code !== "not_member" && err.code !== "disconnected") throw err;
    }
  }

  /**
   * Publishes `data` (any JSON value); resolves with the room offset the server assigned. Every
   * publish carries a publish key (`options.key`, or a random one): when its answer is lost
   * (`disconnected`) or the server could not order it (`unavailable`), it is sent again with
   * the same key, up to `publishRetries` times with backoff, and the server applies it once.
   */
  async publish(data, { key = newPublishKey() } = {}) {
    const frame = { type: "publish", room: this.name, data, key };
    for (let attempt = 0, delay = PUBLISH_RETRY_DELAY_MS; ; attempt++, delay *= 2) {
      try {
        return (await this.client.request(frame)).offset;
      } catch (err) {
        const retry = err.code === "disconnected" || err.code === "unavailable";
        if (!retry || attempt >= this.client.options.publishRetries) throw err;
        await new Promise((resolve) => setTimeout(resolve, delay * (0.5 + Math.random())));
      }
    }
  }

  /**
   * A page of the room's history (see `Roomcast.history`); no need to be joined.
   * @param {{before?: number, after?: number, limit?: number, order?: "newest_first"|"oldest_first"}} options
   */
  history(options = {}) {
    return this.client.history(this.name, options);
  }

  /** The room's members (sorted), asked of the server. */
  async fetchUsers() {
    const reply = await this.client.request({ type: "presence", room: this.name });
    return reply.users;
  }

  // --- driven by the client ---

  /** Sends a join (a resume when an epoch is known) on the open connection. */
  _sendJoin() {
    const frame = { type: "join", room: this.name };
    if (this.presence) frame.presence = true;
    // Joined with rewind and nothing delivered yet: the join point is where to resume.
    const since = this.offset ?? this._rewindTop;
    const resume = this.epoch != null && since != null;
    if (resume) {
      frame.since = since;
      frame.epoch = this.epoch;
    } else if (this._rewind > 0) {
      frame.rewind = this._rewind;
    }
    const previousEpoch = this.epoch;
    const first = this._waiters.length > 0;
    this.client._call(
      frame,
      (joined) => {
        if (this.state === "left") return; // left meanwhile: leave() sent its own request
        this.state = "joined";
        this.epoch = joined.epoch;
        if (resume && joined.recovered) {
          this.emit("recovered", { since, offset: joined.offset, missed: joined.offset - since });
        } else {
          if (resume) {
            this.emit("lost", {
              reason: joined.epoch === previousEpoch ? "history" : "epoch",
              since,
              offset: joined.offset,
              epoch: joined.epoch,
              previousEpoch,
            });
          }
          // Rewound messages (offsets up to the join point) come next: the first one sets the
          // position, as it does for any first message.
          const rewinding = !resume && frame.rewind > 0;
          this.offset = rewinding ? null : joined.offset;
          this._rewindTop = rewinding ? joined.offset : null;
        }
        this._settle(null, joined);
        if (!first) this.emit("rejoined", joined);
        if (this.presence) this._loadUsers();
      },
      (err) => {
        // Lost with the connection: the next connection sends it again.
        if (err.code === "disconnected" || this.state === "left") return;
        this.state = "left";
        if (first) this._settle(err);
        else this.emit("error", err);
      },
    );
  }

  _settle(err, joined) {
    const waiters = this._waiters.splice(0);
    for (const w of waiters) (err ? w.reject(err) : w.resolve(joined));
  }

  /**
   * Asks for the member list. Presence events read before the reply are kept and applied after
   * it if their `seq` is higher than the list's (they happened after it was read); later
   * events likewise, so `users` always ends as the server's list.
   */
  _loadUsers() {
    this._earlyPresence = [];
    this.client._call(
      { type: "presence", room: this.name },
      (reply) => {
        const early = this._earlyPresence ?? [];
        this._earlyPresence = null;
        if (this.state !== "joined") return;
        this.users = reply.users;
        this._presenceSeq = reply.seq ?? 0;
        for (const frame of early) this._applyPresence(frame, false);
        this.emit("presence", [...this.users]);
      },
      (err) => {
        this._earlyPresence = null;
        // Disconnected meanwhile: the rejoin asks again. Refused for now (`rate_limited`,
        // `unavailable`): ask again shortly, or `users` would stay empty for good.
        if (err.code === "disconnected" || this.state !== "joined") return;
        setTimeout(() => {
          if (this.state === "joined" && this.presence && this.users === null) this._loadUsers();
        }, USERS_RETRY_DELAY_MS);
      },
    );
  }

  /** Applies a presence event newer than the list; `announce` emits the change. */
  _applyPresence(frame, announce = true) {
    if (frame.seq != null && frame.seq <= this._presenceSeq) return; // already in the list
    if (frame.seq != null) this._presenceSeq = frame.seq;
    const set = new Set(this.users);
    if (frame.type === "presence_join") set.add(frame.user);
    else set.delete(frame.user);
    this.users = [...set].sort();
    this.emit(frame.type, frame);
    if (announce) this.emit("presence", [...this.users]);
  }

  /** A frame about this room that answers no request. */
  _frame(frame) {
    if (this.state !== "joined") return;
    switch (frame.type) {
      case "message": {
        if (this.offset != null && frame.offset <= this.offset) return; // seen already
        if (this.offset != null && frame.offset > this.offset + 1) {
          this.emit("lost", {
            reason: "gap",
            since: this.offset,
            offset: frame.offset - 1,
            epoch: this.epoch,
            previousEpoch: this.epoch,
          });
        }
        this.offset = frame.offset;
        this._rewindTop = null;
        this.emit("message", frame);
        break;
      }
      case "presence_join":
      case "presence_leave": {
        if (this._earlyPresence) this._earlyPresence.push(frame);
        else if (this.users) this._applyPresence(frame);
        else this.emit(frame.type, frame);
        break;
      }
      case "joined": {
        // Unsolicited: the room's history was lost while joined and numbering restarts (a new
        // epoch), or offsets up to frame.offset could not be read from it (the same epoch).
        const restarted = frame.epoch !== this.epoch;
        const event = {
          reason: restarted ? "restart" : "history",
          since: this.offset,
          offset: frame.offset,
          epoch: frame.epoch,
          previousEpoch: this.epoch,
        };
        this.epoch = frame.epoch;
        this.offset = frame.offset;
        this._rewindTop = null;
        this.emit("lost", event);
        // Presence numbering started over with the room: ask for the list again.
        if (restarted && this.presence) {
          this._presenceSeq = 0;
          this._loadUsers();
        }
        break;
      }
    }
  }
}

/**
 * A connection to roomcast that survives reconnects. See roomcast.d.ts for the options and
 * events, and docs/protocol.md for the frames behind them.
 */
export class Roomcast extends Emitter {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = {
      ...DEFAULTS,
      ...options,
      heartbeat: options.heartbeat === false ? false : { ...DEFAULTS.heartbeat, ...options.heartbeat },
      reconnect: options.reconnect === false ? false : { ...DEFAULTS.reconnect, ...options.reconnect },
    };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") {
      throw new TypeError(
        "no WebSocket: pass options.WebSocket (Node 20 has one behind --experimental-websocket)",
      );
    }
    this._token = options.token ?? null;
    /** "idle" | "connecting" | "open" | "reconnecting" | "closed" */
    this.state = "idle";
    /** The last `welcome` frame: session, user, node, heartbeat_ms, max_message_bytes. */
    this.welcome = null;
    /** Why the client stopped, when `state` is "closed": `{code, reason}`. */
    this.stopped = null;
    this.rooms = new Map();
    this._ws = null;
    this._nextId = 1;
    this._pending = new Map(); // id -> {onReply, onError, timer}
    this._queue = []; // requests waiting for an open connection
    this._attempt = 0;
    this._openedAt = 0;
    this._goawayMs = null;
    this._draining = false;
    this._timers = new Set();
    this._heartbeatTimer = null;
    this._lastFrameAt = 0;
    this._probing = false;
    this._connectWaiters = []; // connect() calls waiting for a welcome
    this._sessions = 0;
    this._welcomed = false; // the current socket has had its welcome
    this._tokenInUse = null;
    this._refreshTimer = null;
    this._reconnectTimer = null;
  }

  /** The user of the current (or last) session. */
  get user() {
    return this.welcome?.user ?? null;
  }

  /**
   * Opens the connection (again, after `close()` or a stop: rooms resume). Resolves with the
   * `welcome` frame; keeps retrying with backoff unless reconnecting is off, then rejects.
   */
  connect() {
    if (this.state === "open") return Promise.resolve(this.welcome);
    const done = new Promise((resolve, reject) => this._connectWaiters.push({ resolve, reject }));
    if (this.state === "idle" || this.state === "closed") {
      this.stopped = null;
      this._attempt = 0;
      this._open();
    }
    return done;
  }

  /** Closes for good (until `connect()`): pending and queued requests fail with `closed`. */
  close(code = 1000, reason = "client closed") {
    this._stop({ code, reason, byClient: true });
  }

  /** A room handle (created on first use; joining is separate). */
  room(name) {
    let room = this.rooms.get(name);
    if (!room) this.rooms.set(name, (room = new Room(this, name)));
    return room;
  }

  /** Joins `name` (see `Room.join`) and resolves with its `Room`. */
  async join(name, options) {
    const room = this.room(name);
    await room.join(options);
    return room;
  }

  /**
   * A page of `room`'s history: messages with `after < offset < before` (both optional), at
   * most `limit` (the server caps it at its `history.max_page`), the newest of that range first
   * (`order: "newest_first"`, the default; page back with `before` = the last offset received)
   * or the oldest first (`"oldest_first"`; page forward with `after`). Resolves with
   * `{epoch, top, messages, more}`: `messages` are `message` frames, `more` says whether the
   * history holds more of the range beyond them. Needs the permission to join the room.
   */
  history(room, { before, after, limit, order } = {}) {
    const frame = { type: "history", room };
    if (before != null) frame.before = before;
    if (after != null) frame.after = after;
    if (limit != null) frame.limit = limit;
    if (order != null) frame.order = order;
    return this.request(frame);
  }

  /** A direct message to every session of `user`; resolves once the server accepted it. */
  async send(to, data) {
    await this.request({ type: "send", to, data });
  }

  /** An application-level round trip; resolves with the milliseconds it took. */
  async ping() {
    const start = Date.now();
    await this.request({ type: "ping" });
    return Date.now() - start;
  }

  /** Replaces the token (or token function) for every later connection. */
  setToken(token) {
    this._token = token;
  }

  /**
   * Sends a `refresh` with `token` (which also replaces the token for later connections), or
   * with a fresh one from the token function. Resolves with `expires_at` (unix seconds).
   */
  async refresh(token) {
    const source = token === undefined ? this._token : token;
    const value = typeof source === "function" ? await source() : source;
    const reply = await this.request({ type: "refresh", token: value });
    // Only a token the server accepted replaces the one later connections use.
    if (token !== undefined) this._token = token;
    this._tokenInUse = value;
    this._scheduleRefresh(value);
    this.emit("refreshed", reply);
    return reply.expires_at;
  }

  /**
   * Sends any request and resolves with its reply (rejects with a `RoomcastError` on an
   * `error` frame). While disconnected it waits, up to `requestTimeoutMs`, for the next
   * connection (after the rooms are rejoined).
   */
  request(frame) {
    if (this.state === "open" && !this._draining) return this._send(frame);
    if (this.state === "closed" || this.state === "idle") {
      return Promise.reject(new RoomcastError("closed", "not connected: call connect()"));
    }
    return new Promise((resolve, reject) => {
      const entry = { frame, resolve, reject };
      entry.timer = this._after(this.options.requestTimeoutMs, () => {
        const i = this._queue.indexOf(entry);
        if (i >= 0) this._queue.splice(i, 1);
        reject(new RoomcastError("timeout", `no connection within ${this.options.requestTimeoutMs} ms`));
      });
      this._queue.push(entry);
    });
  }

  // --- the wire ---

  /** Sends `frame` with a fresh id on the open socket; resolves with the reply. */
  _send(frame) {
    return new Promise((resolve, reject) => this._call(frame, resolve, reject));
  }

  /**
   * Sends `frame` with a fresh id; `onReply` or `onError` runs synchronously when the answer is
   * read, before the next frame is handled. (Some WebSocket implementations dispatch several
   * frames in one task, so promise callbacks could run after the frames that follow a reply.)
   */
  _call(frame, onReply, onError) {
    const id = this._nextId++;
    const timer = this._after(this.options.requestTimeoutMs, () => {
      this._pending.delete(id);
      onError(new RoomcastError("timeout", `no reply to ${frame.type} within ${this.options.requestTimeoutMs} ms`));
    });
    this._pending.set(id, { onReply, onError, timer });
    try {
      this._ws.send(JSON.stringify({ ...frame, id }));
    } catch (err) {
      this._pending.delete(id);
      this._clear(timer);
      onError(new RoomcastError("disconnected", String(err)));
    }
  }

  async _tokenValue() {
    return typeof this._token === "function" ? await this._token() : this._token;
  }

  async _open() {
    this._setState("connecting");
    let token;
    try {
      token = await this._tokenValue();
    } catch (err) {
      this.emit("error", new RoomcastError("token_unavailable", `token provider failed: ${err}`));
      this._lost({ code: CloseCode.ABNORMAL, reason: "token provider failed" });
      return;
    }
    if (this.state !== "connecting") return; // closed meanwhile
    const protocols = [SUBPROTOCOL];
    if (token) protocols.push("bearer." + token);
    let ws;
    try {
      ws = new this.WebSocket(endpoint(this.url, token ? null : this.options.user), protocols);
    } catch (err) {
      this._stop({ code: CloseCode.ABNORMAL, reason: String(err) });
      return;
    }
    this._ws = ws;
    this._tokenInUse = token;
    this._goawayMs = null;
    this._draining = false;
    this._welcomed = false;
    const connectTimer = this._after(this.options.connectTimeoutMs, () => {
      if (this._ws === ws && !this._welcomed) this._abandon(ws, CloseCode.ABNORMAL, "connect timeout");
    });
    ws.onmessage = (event) => {
      if (this._ws !== ws) return;
      this._lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        this.emit("error", new RoomcastError("bad_frame", "unreadable frame from the server"));
        return;
      }
      if (frame.type === "welcome") this._clear(connectTimer);
      this._onFrame(frame);
    };
    ws.onclose = (event) => {
      this._clear(connectTimer);
      if (this._ws !== ws) return;
      this._lost({ code: event.code, reason: event.reason });
    };
    ws.onerror = () => {
      // Browsers follow an error with a close event, which decides what to do. A handshake
      // that failed may get no close event at all (Node 20's WebSocket), so act on it here.
      if (this._ws === ws && ws.readyState === 0) {
        this._clear(connectTimer);
        this._lost({ code: CloseCode.ABNORMAL, reason: "connection failed" });
      }
    };
  }

  _onFrame(frame) {
    const id = frame.id;
    if (id !== undefined && this._pending.has(id)) {
      const p = this._pending.get(id);
      this._pending.delete(id);
      this._clear(p.timer);
      if (frame.type === "error") p.onError(new RoomcastError(frame.code, frame.message, frame));
      else p.onReply(frame);
      return;
    }
    switch (frame.type) {
      case "welcome":
        this._onWelcome(frame);
        break;
      case "joined":
        // With an id it answers a request given up on (timed out): not a restart notice.
        if (id === undefined) this.rooms.get(frame.room)?._frame(frame);
        break;
      case "message":
      case "presence_join":
      case "presence_leave":
        this.rooms.get(frame.room)?._frame(frame);
        break;
      case "direct":
        this.emit("direct", frame);
        break;
      case "goaway":
        // The server drains: queue new requests for the next connection, come back later.
        this._goawayMs = frame.reconnect_after_ms;
        this._draining = true;
        this.emit("goaway", { reconnectAfterMs: frame.reconnect_after_ms });
        break;
      case "error":
        this.emit("error", new RoomcastError(frame.code, frame.message, frame));
        break;
    }
  }

  _onWelcome(welcome) {
    this._welcomed = true;
    this.welcome = welcome;
    this._openedAt = Date.now();
    const reconnected = this._sessions > 0;
    this._sessions++;
    this._setState("open");
    // Rooms first, then whatever waited: replies come in request order, so a queued publish
    // reaches a room the server has already rejoined.
    for (const room of this.rooms.values()) {
      if (room.state !== "left") room._sendJoin();
    }
    for (const entry of this._queue.splice(0)) {
      this._clear(entry.timer);
      this._call(entry.frame, entry.resolve, entry.reject);
    }
    this._startHeartbeat(welcome.heartbeat_ms);
    this._scheduleRefresh(this._tokenInUse);
    this.emit("open", welcome, { reconnected });
    for (const w of this._connectWaiters.splice(0)) w.resolve(welcome);
  }

  /** The room asks to be joined: now when open, else on the next welcome. */
  _roomWantsJoin(room) {
    if (this.state === "open" && !this._draining) room._sendJoin();
    else if (this.state === "idle" || this.state === "closed") {
      room.state = "left";
      room._settle(new RoomcastError("closed", "not connected: call connect()"));
    }
  }

  // --- heartbeat: the server's pings are invisible to browsers, so probe on silence ---

  _startHeartbeat(heartbeatMs) {
    this._stopHeartbeat();
    const hb = this.options.heartbeat;
    if (!hb) return;
    const idle = hb.idleMs ?? heartbeatMs ?? 25_000;
    const ws = this._ws;
    const check = () => {
      if (this._ws !== ws || this.state !== "open") return;
      const silent = Date.now() - this._lastFrameAt;
      if (silent < idle) {
        this._heartbeatTimer = this._after(idle - silent, check);
        return;
      }
      this._heartbeatTimer = this._after(idle, check);
      if (this._probing) return;
      this._probing = true;
      const sentAt = Date.now();
      const probe = this._after(hb.timeoutMs, () => {
        this._probing = false;
        // Nothing at all arrived since the probe: the connection is dead though not closed.
        if (this._ws === ws && this._lastFrameAt < sentAt) {
          this._abandon(ws, CloseCode.HEARTBEAT_TIMEOUT, "no reply to ping");
        }
      });
      this._call(
        { type: "ping" },
        () => {
          this._probing = false;
          this._clear(probe);
        },
        () => {},
      );
    };
    this._lastFrameAt = Date.now();
    this._heartbeatTimer = this._after(idle, check);
  }

  _stopHeartbeat() {
    if (this._heartbeatTimer) this._clear(this._heartbeatTimer);
    this._heartbeatTimer = null;
    this._probing = false;
  }

  // --- token refresh, when the token comes from a provider function ---

  _scheduleRefresh(token) {
    if (this._refreshTimer) this._clear(this._refreshTimer);
    this._refreshTimer = null;
    if (typeof this._token !== "function" || !token || !this.options.autoRefresh) return;
    const exp = tokenExpiry(token);
    if (exp == null) return;
    const left = exp * 1000 - Date.now();
    const delay = Math.max(0, left - Math.min(this.options.refreshBeforeMs, left / 2));
    this._refreshTimer = this._after(delay, () => {
      this._refreshTimer = null;
      if (this.state !== "open") return;
      this.refresh().catch((err) => this.emit("error", err));
    });
  }

  // --- losing a connection, and coming back ---

  /** Gives up on a socket that is not dead by itself (timeout): close it and move on. */
  _abandon(ws, code, reason) {
    try {
      ws.close(code === CloseCode.ABNORMAL ? 4000 : code, reason);
    } catch {
      // Closing a dead socket may throw on some platforms; it is dropped either way.
    }
    if (this._ws === ws) this._lost({ code, reason });
  }

  _detach() {
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.onmessage = ws.onclose = ws.onerror = null;
    this._stopHeartbeat();
    if (this._refreshTimer) this._clear(this._refreshTimer);
    this._refreshTimer = null;
    const lost = new RoomcastError(
      "disconnected",
      "connection lost before the reply; the request may or may not have been done",
    );
    for (const [id, p] of this._pending) {
      this._pending.delete(id);
      this._clear(p.timer);
      p.onError(lost);
    }
  }

  /** The socket ended (`code` as the close event gave it): reconnect or stop. */
  _lost({ code, reason }) {
    this._detach();
    const hint = this._goawayMs ?? reconnectHint(reason);
    const wasOpen = this.state === "open";
    if (code === CloseCode.DISCONNECTED) {
      this._stop({ code, reason: reason || "disconnected by the server" });
      return;
    }
    if (code === CloseCode.TOKEN_EXPIRED && typeof this._token !== "function") {
      // Reconnecting with the same token would be refused: the app must supply a new one.
      this._stop({ code, reason: reason || "token expired" });
      return;
    }
    if (!this.options.reconnect) {
      this._stop({ code, reason });
      return;
    }
    if (wasOpen && Date.now() - this._openedAt >= STABLE_SESSION_MS) this._attempt = 0;
    let delayMs;
    if (hint != null && code === CloseCode.GOING_AWAY) {
      delayMs = hint; // already jittered by the server, per client
    } else if (code === CloseCode.TOKEN_EXPIRED) {
      delayMs = 0; // the provider gives a fresh token right away
    } else {
      delayMs = this._backoff();
      if (code === CloseCode.RATE_LIMITED) delayMs = Math.max(delayMs, RATE_LIMIT_MIN_DELAY_MS);
    }
    this._attempt++;
    this._setState("reconnecting");
    this.emit("close", { code, reason, reconnect: true, delayMs });
    this._reconnectTimer = this._after(delayMs, () => {
      this._reconnectTimer = null;
      if (this.state === "reconnecting") this._open();
    });
  }

  _backoff() {
    const r = this.options.reconnect;
    const base = Math.min(r.maxDelayMs, r.initialDelayMs * r.factor ** this._attempt);
    return Math.round(base * (1 - r.jitter * Math.random()));
  }

  _stop({ code, reason, byClient = false }) {
    if (this.state === "closed") return;
    const ws = this._ws;
    this._detach();
    if (ws && byClient) {
      try {
        ws.close(code, reason);
      } catch {
        // Already closing.
      }
    }
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this._reconnectTimer = null;
    const closed = new RoomcastError(byClient ? "closed" : `close_${code}`, reason || "closed");
    for (const entry of this._queue.splice(0)) entry.reject(closed);
    for (const room of this.rooms.values()) {
      // Joined rooms stay joined: `connect()` resumes them. Unanswered joins are dropped.
      if (room.state === "joining") room.state = "left";
      room._settle(closed);
    }
    this.stopped = { code, reason };
    this._setState("closed");
    this.emit("close", { code, reason, reconnect: false, delayMs: null });
    for (const w of this._connectWaiters.splice(0)) w.reject(closed);
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  _after(ms, fn) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  _clear(t) {
    clearTimeout(t);
    this._timers.delete(t);
  }
}

/** `reconnect_after_ms=N` from a 1001 close reason (when the goaway frame was not seen). */
function reconnectHint(reason) {
  const m = /reconnect_after_ms=(\d+)/.exec(reason ?? "");
  return m ? Number(m[1]) : null;
}

export default Roomcast;
