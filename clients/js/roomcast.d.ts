// Type declarations for roomcast.js, the roomcast client (docs/protocol.md is the wire contract).

/** The subprotocol the server selects: `"roomcast.v1"`. */
export const SUBPROTOCOL: "roomcast.v1";

/** Close codes the client acts on. */
export const CloseCode: {
  readonly NORMAL: 1000;
  readonly GOING_AWAY: 1001;
  readonly ABNORMAL: 1006;
  readonly SLOW_CONSUMER: 4000;
  readonly TOKEN_EXPIRED: 4001;
  readonly DISCONNECTED: 4003;
  readonly HEARTBEAT_TIMEOUT: 4008;
  readonly RATE_LIMITED: 4029;
};

/** Any JSON value: what `data` may be. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A token, or a function giving a fresh one (called before every connection and refresh). */
export type TokenSource = string | (() => string | Promise<string>);

export interface HeartbeatOptions {
  /**
   * Silence (no frame received) after which the client sends an application `ping`.
   * Default: the server's `heartbeat_ms` from `welcome` (25 s by default).
   */
  idleMs?: number | null;
  /** How long the `ping` may go unanswered (nothing received at all) before the connection is
   * declared dead and replaced. Default 10 000. */
  timeoutMs?: number;
}

export interface ReconnectOptions {
  /** First backoff delay. Default 500. */
  initialDelayMs?: number;
  /** Largest backoff delay. Default 30 000. */
  maxDelayMs?: number;
  /** Growth per failed attempt. Default 2. */
  factor?: number;
  /** Fraction of each delay drawn at random (0..1): delay ∈ [base·(1−jitter), base]. Default 0.5. */
  jitter?: number;
}

export interface RoomcastOptions {
  /** `?user=` for servers with authentication off. Ignored when a token is given. */
  user?: string;
  /** A JWT, sent as the subprotocol entry `bearer.<token>` next to `roomcast.v1`. With a
   * function the client also refreshes the session before the token expires, and reconnects
   * after close 4001; with a string it stops on 4001 until `refresh()`/`connect()`. */
  token?: TokenSource;
  /** The WebSocket constructor. Default `globalThis.WebSocket` (Node 20: run with
   * `--experimental-websocket`, or pass one). */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
  /** How long a request waits for its reply (or, while disconnected, for a connection).
   * Default 10 000. */
  requestTimeoutMs?: number;
  /** How long a new socket may take to deliver `welcome`. Default 10 000. */
  connectTimeoutMs?: number;
  /** Dead-connection detection; `false` turns it off. */
  heartbeat?: HeartbeatOptions | false;
  /** Reconnection; `false` stops at the first loss. */
  reconnect?: ReconnectOptions | false;
  /** With a token function: send `refresh` with a fresh token before the current one expires.
   * Default true. */
  autoRefresh?: boolean;
  /** With a token function: refresh this long before `exp` (at most half the lifetime).
   * Default 30 000. */
  refreshBeforeMs?: number;
  /** How many times a publish is sent again, with its publish key, when its answer was lost
   * (`disconnected`) or the server could not order it (`unavailable`). Default 3. */
  publishRetries?: number;
}

/** Options of one publish. */
export interface PublishOptions {
  /** The publish key (1-128 characters of `[A-Za-z0-9_.:@-]`); default a random one. A
   * publish sent again with the same key within the server's window is applied once. */
  key?: string;
}

/** Error codes of `error` frames (docs/protocol.md), plus the client's own. */
export type ErrorCode =
  | "bad_json"
  | "unknown_type"
  | "bad_request"
  | "invalid_room"
  | "not_member"
  | "too_many_rooms"
  | "rate_limited"
  | "unsupported"
  | "unavailable"
  | "shutting_down"
  | "forbidden"
  | "token_invalid"
  | "token_expired"
  | "token_not_yet_valid"
  | "token_too_large"
  | "token_wrong_user"
  | "data_too_complex"
  /** The application's backend refused the join or publish; its code is in `appCode`. */
  | "denied"
  /** The application's backend could not be asked and the server fails closed. */
  | "backend_unavailable"
  /** The connection dropped before the reply: the request may or may not have been done. */
  | "disconnected"
  /** No reply (or no connection) within `requestTimeoutMs`. */
  | "timeout"
  /** The client was closed (or was not connected). */
  | "closed"
  /** The server sent a frame that is not JSON. */
  | "bad_frame"
  /** The token function threw. */
  | "token_unavailable"
  /** The server stopped the client with this close code (e.g. `close_4003`). */
  | `close_${number}`;

export class RoomcastError extends Error {
  readonly name: "RoomcastError";
  readonly code: ErrorCode | string;
  /** The `error` frame, when the server sent one. */
  readonly frame?: ErrorFrame;
  /** With `code: "denied"`: the application's backend's own code (`frame.app_code`). */
  readonly appCode?: string;
  constructor(code: string, message?: string, frame?: ErrorFrame);
}

export interface Welcome {
  type: "welcome";
  session: string;
  user: string;
  node: string;
  heartbeat_ms: number;
  max_message_bytes: number;
  /** What the application's backend attached to the session (connect proxy), if anything. */
  info?: Json;
}

export interface Joined {
  type: "joined";
  id?: number;
  room: string;
  epoch: string;
  offset: number;
  /** Present on a resume (`since`/`epoch` given), and on the unsolicited restart notice. */
  recovered?: boolean;
}

export interface Message<T = Json> {
  type: "message";
  room: string;
  offset: number;
  from: string;
  data: T;
  /** The application's backend's id for the message (publish proxy), if it gave one. */
  id?: string;
  /** Server clock at publish, unix milliseconds. */
  ts: number;
}

export interface Direct<T = Json> {
  type: "direct";
  from: string;
  data: T;
  ts: number;
}

export interface PresenceEvent {
  type: "presence_join" | "presence_leave";
  room: string;
  /** The room's presence event number; `room.users` applies only events newer than its list. */
  seq: number;
  user: string;
}

export interface ErrorFrame {
  type: "error";
  id?: number;
  code: string;
  message: string;
  /** With `code: "denied"`: the application's backend's own code. */
  app_code?: string;
}

export interface Refreshed {
  type: "refreshed";
  id?: number;
  expires_at: number;
}

/** Missed messages are being replayed after a reconnect: `missed` of them, `since+1..=offset`. */
export interface RecoveredEvent {
  since: number;
  offset: number;
  missed: number;
}

/**
 * Messages were lost for this client; reload the room's state by other means.
 * - `history`: the room's history no longer reaches back to `since` (resume refused), or the
 *   server could not read offsets up to `offset` from it while joined (unsolicited notice).
 * - `epoch`: the room's history was replaced (e.g. the server or Redis restarted empty).
 * - `restart`: the unsolicited `joined` notice: history lost while joined; offsets restart.
 * - `gap`: offsets jumped (never expected from a conforming server).
 * Live messages continue after `offset` in `epoch`.
 */
export interface LostEvent {
  reason: "history" | "epoch" | "restart" | "gap";
  since: number | null;
  offset: number;
  epoch: string;
  previousEpoch: string | null;
}

export interface CloseEvent {
  code: number;
  reason: string;
  /** Whether the client will reconnect by itself. */
  reconnect: boolean;
  /** When it will, after how long (the server's `goaway` hint, or backoff). */
  delayMs: number | null;
}

export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";
export type RoomState = "left" | "joining" | "joined";

export interface JoinOptions {
  /** Receive `presence_join`/`presence_leave` and keep `room.users`. */
  presence?: boolean;
  /** Resume from a stored position: the last offset seen, with its epoch (both or neither). */
  since?: number;
  epoch?: string;
  /** On a plain join: receive up to the room's N latest messages (server cap
   * `history.max_rewind`), oldest first, as `message` events right before live ones. */
  rewind?: number;
}

export interface HistoryOptions {
  /** Only offsets below this (page back: the last offset received). */
  before?: number;
  /** Only offsets above this (page forward). */
  after?: number;
  /** At most this many (the server caps it at `history.max_page`, also its default). */
  limit?: number;
  /** Which end of the range, in which order. Default "newest_first". */
  order?: "newest_first" | "oldest_first";
}

export interface HistoryPage<T = Json> {
  type: "history";
  id?: number;
  room: string;
  /** The offsets below belong to this epoch. */
  epoch: string;
  /** The room's latest offset. */
  top: number;
  /** `message` frames, in the order asked for. */
  messages: Message<T>[];
  /** Whether the history holds more of the range beyond these. */
  more: boolean;
}

export interface RoomEvents {
  message: (message: Message) => void;
  presence_join: (event: PresenceEvent) => void;
  presence_leave: (event: PresenceEvent) => void;
  /** The full member list, after each (re)join and each presence event (presence rooms only). */
  presence: (users: string[]) => void;
  recovered: (event: RecoveredEvent) => void;
  lost: (event: LostEvent) => void;
  /** Joined again on a new connection (after `recovered` or `lost`). */
  rejoined: (joined: Joined) => void;
  /** A rejoin was refused (e.g. `forbidden` under a new token); the room is left. */
  error: (error: RoomcastError) => void;
}

export interface RoomcastEvents {
  /** A session began (`reconnected` on every one after the first). */
  open: (welcome: Welcome, info: { reconnected: boolean }) => void;
  /** A socket ended; see `reconnect`. */
  close: (event: CloseEvent) => void;
  state: (state: ConnectionState) => void;
  direct: (message: Direct) => void;
  /** The server is draining; the client reconnects after `reconnectAfterMs`. */
  goaway: (event: { reconnectAfterMs: number }) => void;
  refreshed: (reply: Refreshed) => void;
  /** An error that answers no request (e.g. `rate_limited`), or a failed automatic refresh. */
  error: (error: RoomcastError) => void;
}

declare class Emitter<Events extends { [K in keyof Events]: (...args: any[]) => void }> {
  /** Adds a listener; returns the function that removes it. */
  on<K extends keyof Events>(event: K, fn: Events[K]): () => void;
  once<K extends keyof Events>(event: K, fn: Events[K]): () => void;
  off<K extends keyof Events>(event: K, fn: Events[K]): void;
}

export class Room extends Emitter<RoomEvents> {
  readonly client: Roomcast;
  readonly name: string;
  readonly state: RoomState;
  /** The room's history id, from the last `joined`. */
  readonly epoch: string | null;
  /** The offset of the last message delivered (what a resume sends as `since`). */
  readonly offset: number | null;
  readonly presence: boolean;
  /** Members, sorted, while joined with presence. */
  readonly users: string[] | null;
  /** Joins; waits through reconnects. Rejects on an error reply. */
  join(options?: JoinOptions): Promise<Joined>;
  leave(): Promise<void>;
  /** Resolves with the offset the server gave the message. Retried with its publish key after
   * `disconnected` or `unavailable` (see `publishRetries`), so it is applied once. */
  publish(data: Json, options?: PublishOptions): Promise<number>;
  /** A page of this room's history (see `Roomcast.history`). */
  history(options?: HistoryOptions): Promise<HistoryPage>;
  /** The members (sorted), asked of the server. */
  fetchUsers(): Promise<string[]>;
}

export class Roomcast extends Emitter<RoomcastEvents> {
  /** `url`: `ws(s)://host/ws`, or `http(s)://host` (becomes `ws(s)://host/ws`), or a path. */
  constructor(url: string, options?: RoomcastOptions);
  readonly url: string;
  readonly state: ConnectionState;
  readonly welcome: Welcome | null;
  readonly user: string | null;
  /** Why the client stopped, once `state` is "closed". */
  readonly stopped: { code: number; reason: string } | null;
  readonly rooms: ReadonlyMap<string, Room>;
  /** Opens (or re-opens after a stop: joined rooms resume). Resolves at `welcome`. */
  connect(): Promise<Welcome>;
  /** Stops; pending requests fail with `closed`. */
  close(code?: number, reason?: string): void;
  /** The room's handle, created on first use. */
  room(name: string): Room;
  join(name: string, options?: JoinOptions): Promise<Room>;
  /** A page of `room`'s history; rejects with `bad_range`, `unknown_room`, `forbidden` or
   * `unavailable` as the server answers. Needs the permission to join the room, not membership. */
  history(room: string, options?: HistoryOptions): Promise<HistoryPage>;
  /** A direct message to every session of `to`. */
  send(to: string, data: Json): Promise<void>;
  /** Round trip in milliseconds. */
  ping(): Promise<number>;
  /** Replaces the token (or token function) for later connections; after a stop on 4001,
   * call `connect()` next. */
  setToken(token: TokenSource): void;
  /** Sends a `refresh` (with `token`, or a fresh one from the token function); resolves with
   * `expires_at` (unix seconds). The token is used for later connections too. */
  refresh(token?: TokenSource): Promise<number>;
  /** Any request; resolves with its reply, rejects with `RoomcastError` on an `error` frame. */
  request<R = any>(frame: { type: string; [key: string]: unknown }): Promise<R>;
}

/** `exp` of a JWT (unix seconds), or null. */
export function tokenExpiry(token: string): number | null;

export const DEFAULTS: {
  readonly requestTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly heartbeat: Readonly<HeartbeatOptions>;
  readonly reconnect: Readonly<Required<ReconnectOptions>>;
  readonly autoRefresh: boolean;
  readonly refreshBeforeMs: number;
  readonly publishRetries: number;
};

export default Roomcast;
