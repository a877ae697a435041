// Losing the connection and coming back: resume without gap or duplicate, dead-connection
// detection by application ping, backoff with jitter, the server's goaway hint and 1001, no
// reconnect after 4003, and the loss notices (new epoch after a node restart, the unsolicited
// `joined` after Redis restarted empty). A TCP proxy stands between the client and the server.

import { execFileSync } from "node:child_process";
import { test, after } from "node:test";
import assert from "node:assert/strict";

import { Roomcast } from "../roomcast.js";
import { env, unique, waitEvent, collect, until, sleep, startProxy, startNode, startRedis, api } from "./helpers.mjs";

const URL = env("ROOMCAST_URL");
const ADDR = new globalThis.URL(URL).host;
const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

function client(url, options = {}) {
  const c = new Roomcast(url, { user: unique("u"), ...options });
  cleanups.push(() => c.close());
  return c;
}

async function proxy(target = ADDR) {
  const p = await startProxy(target);
  cleanups.push(() => p.close());
  return p;
}

async function node(config = {}) {
  const n = await startNode(config);
  cleanups.push(() => n.stop("SIGKILL"));
  return n;
}

test("a dropped connection resumes: missed messages once, in order, then live; queued requests go after the rejoin", { timeout: 15_000 }, async () => {
  const p = await proxy();
  const name = unique("resume");
  const reader = client(p.url, { reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
  await reader.connect();
  const room = reader.room(name);
  const c = collect(room);
  await room.join();
  const writer = client(URL);
  await writer.connect();
  const wroom = await writer.join(name);
  for (let i = 1; i <= 3; i++) await wroom.publish(i);
  await c.waitCount(3);

  // The network path dies; new connections are refused for a while.
  p.refuse = true;
  const closed = waitEvent(reader, "close");
  p.cut();
  const close = await closed;
  assert.equal(close.code, 1006);
  assert.equal(close.reconnect, true);
  assert.equal(reader.state, "reconnecting");
  // Sent while away: waits for the next connection, then follows the rejoin.
  const queued = room.publish("from the reader, queued");
  for (let i = 4; i <= 8; i++) await wroom.publish(i);
  const recovered = waitEvent(room, "recovered");
  const reopened = waitEvent(reader, "open");
  p.refuse = false;
  const [, info] = await reopened;
  assert.equal(info.reconnected, true);
  assert.deepEqual(await recovered, { since: 3, offset: 8, missed: 5 });
  assert.equal(await queued, 9);
  await wroom.publish(10);
  await c.waitCount(10);
  assert.deepEqual(c.offsets(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "no gap, no duplicate");
  assert.deepEqual(c.lost, []);
});

test("a request in flight when the connection drops fails with disconnected", { timeout: 10_000 }, async () => {
  const p = await proxy();
  const c = client(p.url, { reconnect: { initialDelayMs: 50 } });
  await c.connect();
  p.freeze();
  const inflight = c.ping();
  await sleep(50);
  p.cut();
  await assert.rejects(inflight, { code: "disconnected" });
  await waitEvent(c, "open");
  assert.ok((await c.ping()) >= 0);
});

test("a publish whose ack was lost is sent again with its key and applied once", { timeout: 10_000 }, async () => {
  const p = await proxy();
  const name = unique("once");
  const c = client(p.url, { reconnect: { initialDelayMs: 50 } });
  await c.connect();
  const room = await c.join(name);
  const watcher = client(URL);
  await watcher.connect();
  const seen = collect(watcher.room(name));
  await watcher.room(name).join();
  // The publish reaches the server, its ack does not; the connection then drops.
  p.muteReplies();
  const published = room.publish("exactly once");
  await seen.waitCount(1);
  p.cut();
  assert.equal(await published, 1, "the retry is answered with the first offset");
  await room.publish("next");
  await seen.waitCount(2);
  assert.deepEqual(seen.offsets(), [1, 2], "no duplicate");
});

test("a silent connection is probed with ping and replaced when the ping goes unanswered", { timeout: 15_000 }, async () => {
  const p = await proxy();
  const name = unique("dead");
  const reader = client(p.url, { heartbeat: { idleMs: 300, timeoutMs: 400 }, reconnect: { initialDelayMs: 50 } });
  await reader.connect();
  const room = reader.room(name);
  const c = collect(room);
  await room.join();
  const writer = client(URL);
  await writer.connect();
  const wroom = await writer.join(name);
  await wroom.publish("before");
  await c.waitCount(1);
  // Pings on silence keep a healthy idle connection as it is.
  await sleep(1_000);
  assert.equal(p.accepted, 1, "no reconnect while healthy");

  // The path goes dead without any close: only the unanswered ping can tell.
  const frozenAt = Date.now();
  p.freeze();
  const closed = waitEvent(reader, "close");
  await wroom.publish("while dead");
  const close = await closed;
  const detectedIn = Date.now() - frozenAt;
  assert.equal(close.code, 4008, "reported as a heartbeat timeout");
  assert.ok(detectedIn < 300 + 400 + 500, `detected in ${detectedIn} ms`);
  const recovered = await waitEvent(room, "recovered");
  assert.equal(recovered.missed, 1);
  await c.waitCount(2);
  assert.deepEqual(c.offsets(), [1, 2]);
});

test("reconnect attempts back off exponentially, with jitter, up to the maximum", { timeout: 15_000 }, async () => {
  const p = await proxy();
  const c = client(p.url, { reconnect: { initialDelayMs: 40, maxDelayMs: 320, factor: 2, jitter: 0.5 } });
  await c.connect();
  p.refuse = true;
  const delays = [];
  c.on("close", (e) => delays.push(e.delayMs));
  p.cut();
  await until(() => delays.length >= 6, "six attempts", 10_000);
  const bases = [40, 80, 160, 320, 320, 320];
  delays.slice(0, 6).forEach((d, i) => {
    assert.ok(d >= bases[i] / 2 && d <= bases[i], `attempt ${i}: ${d} ms not in [${bases[i] / 2}, ${bases[i]}]`);
  });
  assert.ok(new Set(delays).size > 1, `jittered: ${delays}`);
  p.refuse = false;
  await waitEvent(c, "open");
});

test("a draining server's goaway hint is honoured after close 1001, then the room resumes elsewhere", { timeout: 20_000 }, async () => {
  const first = await node({ ROOMCAST_RECONNECT_SPREAD_MS: "1500" });
  const second = await node();
  const p = await proxy(first.addr);
  const name = unique("drain");
  const c = client(p.url);
  const welcome = await c.connect();
  assert.equal(welcome.node, first.nodeId);
  const room = c.room(name);
  const col = collect(room);
  await room.join();
  await room.publish("before");
  await col.waitCount(1);

  const goaway = waitEvent(c, "goaway");
  const closed = waitEvent(c, "close");
  const lostP = waitEvent(room, "lost");
  p.target = second.addr; // the balancer sends new connections elsewhere
  const stopping = first.stop("SIGTERM");
  const hint = (await goaway).reconnectAfterMs;
  const close = await closed;
  const closedAt = Date.now();
  assert.equal(close.code, 1001);
  assert.equal(close.delayMs, hint, "the server's hint, not the backoff");
  assert.ok(hint >= 0 && hint <= 1500);
  // Requests made while draining wait for the next connection.
  const queued = c.ping();
  const [back] = await waitEvent(c, "open");
  assert.ok(Date.now() - closedAt >= hint - 20, `waited ${Date.now() - closedAt} ms of ${hint}`);
  assert.equal(back.node, second.nodeId);
  assert.ok((await queued) >= 0);
  // The memory engine's history left with the first node: the client is told.
  const lost = await lostP;
  assert.equal(lost.reason, "epoch");
  assert.equal(lost.since, 1);
  await room.publish("after");
  await col.waitCount(2);
  assert.equal(col.messages[1].data, "after");
  const t = Date.now();
  await stopping;
  assert.ok(Date.now() - t < 5_000, "the drained node exited");
});

test("close 4003 (disconnected by the application) stops reconnecting; connect() resumes", { timeout: 15_000 }, async () => {
  const p = await proxy();
  const user = unique("mallory");
  const c = client(p.url, { user, reconnect: { initialDelayMs: 50 } });
  await c.connect();
  const name = unique("r");
  const room = c.room(name);
  const col = collect(room);
  await room.join();
  await room.publish(1);
  await col.waitCount(1);
  const closed = waitEvent(c, "close");
  await api(URL, `/api/users/${user}/disconnect`);
  const close = await closed;
  assert.equal(close.code, 4003);
  assert.equal(close.reconnect, false);
  assert.equal(c.state, "closed");
  assert.equal(c.stopped.code, 4003);
  await assert.rejects(c.ping(), { code: "closed" });
  await sleep(500);
  assert.equal(p.accepted, 1, "no automatic reconnect");

  // The app decides to come back: rooms resume where they were.
  const writer = client(URL);
  await writer.connect();
  await (await writer.join(name)).publish(2);
  const recovered = waitEvent(room, "recovered");
  await c.connect();
  assert.equal((await recovered).missed, 1);
  await col.waitCount(2);
  assert.deepEqual(col.offsets(), [1, 2]);
});

test("a node restarted empty behind the proxy: the rejoin reports the lost epoch", { timeout: 15_000 }, async () => {
  const first = await node();
  const p = await proxy(first.addr);
  const c = client(p.url, { reconnect: { initialDelayMs: 50, maxDelayMs: 100 } });
  await c.connect();
  const room = c.room(unique("r"));
  const col = collect(room);
  await room.join();
  await room.publish("old");
  await col.waitCount(1);
  const oldEpoch = room.epoch;
  await first.stop("SIGKILL");
  const second = await node();
  p.target = second.addr;
  const lost = await waitEvent(room, "lost");
  assert.deepEqual(
    { reason: lost.reason, since: lost.since, previousEpoch: lost.previousEpoch },
    { reason: "epoch", since: 1, previousEpoch: oldEpoch },
  );
  assert.notEqual(room.epoch, oldEpoch);
  await room.publish("new");
  await col.waitCount(2);
  assert.deepEqual(col.offsets(), [1, 1], "numbering restarts in the new epoch");
});

/** A node on a private Redis, a reader joined to a fresh room and a writer that published 0, 1, 2 to it. */
async function redisRoomWithThreeMessages() {
  const redis = await startRedis();
  cleanups.push(() => redis.kill());
  const prefix = unique("js");
  const n = await node({ ROOMCAST_BROKER: "redis", ROOMCAST_REDIS__URL: redis.url, ROOMCAST_REDIS__PREFIX: prefix });
  const [reader, writer] = [client(n.url), client(n.url)];
  await reader.connect();
  await writer.connect();
  const name = unique("r");
  const room = reader.room(name);
  const col = collect(room);
  await room.join();
  const wroom = await writer.join(name);
  for (let i = 0; i < 3; i++) await wroom.publish(i);
  await col.waitCount(3);
  return { redis, prefix, name, room, col, wroom };
}

test("offsets the node could not read from the history: the same-epoch notice becomes a lost(history) notice", { timeout: 30_000 }, async () => {
  const { redis, prefix, name, room, col, wroom } = await redisRoomWithThreeMessages();
  const epoch = room.epoch;
  // Offsets 4-6 taken in Redis without being logged or published: a gap the history cannot fill.
  execFileSync("redis-cli", ["-p", String(redis.port), "HINCRBY", `${prefix}:meta:${name}`, "top", "3"]);
  const lost = waitEvent(room, "lost", () => true, 10_000);
  await wroom.publish("after");
  const notice = await lost;
  assert.deepEqual(
    [notice.reason, notice.since, notice.offset, notice.epoch, notice.previousEpoch],
    ["history", 3, 6, epoch, epoch],
  );
  await col.waitCount(4);
  assert.deepEqual(col.offsets(), [1, 2, 3, 7]);
});

test("Redis restarting empty under a joined room: the unsolicited joined becomes a lost(restart) notice", { timeout: 30_000 }, async () => {
  const { redis, prefix, name, room, col, wroom } = await redisRoomWithThreeMessages();
  const oldEpoch = room.epoch;

  const lost = waitEvent(room, "lost", () => true, 20_000);
  await redis.restart();
  // Publish until Redis takes commands again: the node then sees the new epoch.
  await until(
    () =>
      wroom.publish("after").then(
        () => true,
        (err) => (assert.equal(err.code, "unavailable"), false),
      ),
    "publishing after the Redis restart",
    15_000,
  );
  const notice = await lost;
  assert.equal(notice.reason, "restart");
  assert.equal(notice.since, 3);
  assert.equal(notice.previousEpoch, oldEpoch);
  assert.equal(notice.offset, 0);
  assert.notEqual(room.epoch, oldEpoch);
  await col.waitCount(4);
  assert.deepEqual(col.offsets(), [1, 2, 3, 1]);
  assert.deepEqual(col.messages[3].data, "after");
});

test("room.users ends as the server's list when a join races the list request, across two nodes", { timeout: 30_000 }, async () => {
  const redis = await startRedis();
  cleanups.push(() => redis.kill());
  const prefix = unique("js");
  const config = {
    ROOMCAST_BROKER: "redis",
    ROOMCAST_REDIS__URL: redis.url,
    ROOMCAST_REDIS__PREFIX: prefix,
    // Four requests a trial from each client, faster than the default 50 a second.
    ROOMCAST_LIMITS__INBOUND_RATE_PER_SEC: "100000",
    ROOMCAST_LIMITS__INBOUND_BURST: "100000",
  };
  const [n0, n1] = [await node(config), await node(config)];
  const [a, b] = [client(n0.url), client(n1.url)];
  await a.connect();
  await b.connect();
  for (let trial = 0; trial < 50; trial++) {
    const name = unique("race");
    const [ra, rb] = [a.room(name), b.room(name)];
    // a's list request goes out as its join is answered, while b's join is being announced.
    await Promise.all([ra.join({ presence: true }), rb.join()]);
    const truth = [a.user, b.user].sort();
    await until(() => JSON.stringify(ra.users) === JSON.stringify(truth), `trial ${trial}: both in room.users`);
    assert.deepEqual(await ra.fetchUsers(), truth);
    await Promise.all([ra.leave(), rb.leave()]);
  }
});
