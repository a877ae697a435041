// Requests, replies and errors, rooms and their events, direct messages, queueing, and resuming
// from a stored position: against the real server tests/js_client.rs started (ROOMCAST_URL).

import { test, after } from "node:test";
import assert from "node:assert/strict";

import { Roomcast, RoomcastError, tokenExpiry } from "../roomcast.js";
import { env, unique, waitEvent, collect, until, sleep } from "./helpers.mjs";

const URL = env("ROOMCAST_URL");
const clients = [];

/** A connected client for a fresh user. */
async function connect(prefix = "u", options = {}) {
  const client = new Roomcast(URL, { user: unique(prefix), ...options });
  clients.push(client);
  await client.connect();
  return client;
}

after(() => {
  for (const c of clients) c.close();
});

test("connects with ?user= and the roomcast.v1 subprotocol, and says welcome", { timeout: 10_000 }, async () => {
  const user = unique("alice");
  const client = new Roomcast(URL, { user });
  clients.push(client);
  const states = [];
  client.on("state", (s) => states.push(s));
  const welcome = await client.connect();
  assert.equal(welcome.type, "welcome");
  assert.equal(welcome.user, user);
  assert.equal(client.user, user);
  assert.equal(client.state, "open");
  assert.deepEqual(states, ["connecting", "open"]);
  assert.ok(welcome.heartbeat_ms > 0);
  assert.match(welcome.session, /^s-/);
  // A second connect() on an open client is the same session.
  assert.equal(await client.connect(), welcome);
});

test("replies resolve the request with their id, even many in flight at once", { timeout: 10_000 }, async () => {
  const client = await connect();
  const room = await client.join(unique("room"));
  const acks = await Promise.all(Array.from({ length: 50 }, (_, i) => room.publish({ i })));
  assert.deepEqual(acks, Array.from({ length: 50 }, (_, i) => i + 1), "each ack its own offset, in order");
  assert.ok((await client.ping()) >= 0);
  const pong = await client.request({ type: "ping" });
  assert.equal(pong.type, "pong");
});

test("error frames reject with their code, and the connection stays open", { timeout: 10_000 }, async () => {
  const client = await connect();
  const reject = async (promise, code) => {
    const err = await promise.then(
      () => assert.fail(`expected ${code}`),
      (e) => e,
    );
    assert.ok(err instanceof RoomcastError, String(err));
    assert.equal(err.code, code, err.message);
    return err;
  };
  const err = await reject(client.room(unique("r")).publish("x"), "not_member");
  assert.equal(err.frame.type, "error");
  await reject(client.join("bad room!"), "invalid_room");
  assert.equal(client.room("bad room!").state, "left");
  await reject(client.request({ type: "teleport" }), "unknown_type");
  const name = unique("r");
  await client.join(name);
  await reject(client.request({ type: "join", room: name }), "bad_request");
  await reject(client.room(name).join(), "bad_request");
  await reject(client.refresh("not-a-token"), "bad_request"); // authentication is off
  assert.equal(client.state, "open");
  assert.ok(await client.ping() >= 0);
});

test("a room delivers every message in order to every member, publisher included", { timeout: 10_000 }, async () => {
  const name = unique("chat");
  const [a, b] = [await connect("a"), await connect("b")];
  const ra = a.room(name);
  const ca = collect(ra);
  await ra.join();
  const cb = collect(await b.join(name));
  assert.equal(ra.state, "joined");
  assert.equal(ra.offset, 0);
  assert.equal(typeof ra.epoch, "string");
  for (let i = 0; i < 10; i++) await (i % 2 ? ra : b.room(name)).publish({ text: `m${i}` });
  await ca.waitCount(10);
  await cb.waitCount(10);
  assert.deepEqual(ca.offsets(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.deepEqual(cb.messages, ca.messages, "one order for all");
  assert.deepEqual(ca.messages[0].data, { text: "m0" });
  assert.equal(ca.messages[0].from, b.user);
  assert.equal(ra.offset, 10, "the room tracks the last offset delivered");

  // After leaving, nothing more arrives for the room.
  await ra.leave();
  assert.equal(ra.state, "left");
  await b.room(name).publish("after");
  await cb.waitCount(11);
  await sleep(100);
  assert.equal(ca.messages.length, 10);
  await assert.rejects(ra.publish("x"), { code: "not_member" });
});

test("presence: join and leave events and the member list", { timeout: 10_000 }, async () => {
  const name = unique("pres");
  const a = await connect("a");
  const room = a.room(name);
  const lists = [];
  room.on("presence", (users) => lists.push(users));
  const joins = [];
  room.on("presence_join", (e) => joins.push(e.user));
  await room.join({ presence: true });
  await until(() => room.users?.includes(a.user), "own presence");
  const b = await connect("b");
  const left = waitEvent(room, "presence_leave", (e) => e.user === b.user);
  await b.join(name);
  await until(() => room.users.includes(b.user), "b in the list");
  assert.deepEqual(room.users, [a.user, b.user].sort());
  assert.deepEqual(await room.fetchUsers(), room.users);
  assert.ok(joins.includes(b.user));
  b.close();
  await left;
  assert.deepEqual(room.users, [a.user]);
  assert.deepEqual(lists.at(-1), [a.user]);
});

test("direct messages reach every session of the user", { timeout: 10_000 }, async () => {
  const a = await connect("a");
  const bob = unique("bob");
  const b1 = new Roomcast(URL, { user: bob });
  const b2 = new Roomcast(URL, { user: bob });
  clients.push(b1, b2);
  await Promise.all([b1.connect(), b2.connect()]);
  const got = Promise.all([b1, b2].map((c) => waitEvent(c, "direct")));
  await a.send(bob, { text: "psst" });
  for (const d of await got) {
    assert.equal(d.from, a.user);
    assert.deepEqual(d.data, { text: "psst" });
  }
});

test("requests made before the connection opens wait for it, after the rooms", { timeout: 10_000 }, async () => {
  const client = new Roomcast(URL, { user: unique("early") });
  clients.push(client);
  const connected = client.connect();
  assert.equal(client.state, "connecting");
  const name = unique("early");
  const room = client.room(name);
  const c = collect(room);
  const joined = room.join();
  const offset = room.publish({ early: true });
  await connected;
  assert.equal((await joined).type, "joined");
  assert.equal(await offset, 1);
  await c.waitCount(1);
});

test("close() fails what is pending and stops; requests afterwards fail with closed", { timeout: 10_000 }, async () => {
  const client = new Roomcast(URL, { user: unique("c") });
  const closes = [];
  client.on("close", (e) => closes.push(e));
  const connecting = client.connect();
  const queued = client.ping();
  client.close();
  await assert.rejects(connecting, { code: "closed" });
  await assert.rejects(queued, { code: "closed" });
  await assert.rejects(client.ping(), { code: "closed" });
  assert.equal(client.state, "closed");
  assert.equal(closes.at(-1).reconnect, false);
});

test("a stored position resumes: recovered, then exactly the missed messages", { timeout: 10_000 }, async () => {
  const name = unique("resume");
  const writer = await connect("w");
  const wroom = await writer.join(name);
  for (let i = 1; i <= 3; i++) await wroom.publish(i);

  // A page that saw up to offset 3 and then went away (e.g. reloaded)...
  const first = await connect("r");
  const saw = collect(first.room(name));
  await first.room(name).join({ since: 0, epoch: wroom.epoch });
  await saw.waitCount(3);
  const { offset, epoch } = first.room(name);
  assert.equal(offset, 3);
  first.close();
  for (let i = 4; i <= 6; i++) await wroom.publish(i);

  // ...comes back with what it stored.
  const again = await connect("r");
  const room = again.room(name);
  const c = collect(room);
  const joined = await room.join({ since: offset, epoch });
  assert.equal(joined.recovered, true);
  await c.waitCount(3);
  assert.deepEqual(c.offsets(), [4, 5, 6]);
  assert.deepEqual(c.recovered, [{ since: 3, offset: 6, missed: 3 }]);
  assert.deepEqual(c.lost, []);
});

test("a position the history cannot serve is reported lost, then live messages follow", { timeout: 10_000 }, async () => {
  const name = unique("ahead");
  const writer = await connect("w");
  const wroom = await writer.join(name);
  await wroom.publish("one");
  const reader = await connect("r");
  const room = reader.room(name);
  const c = collect(room);
  const joined = await room.join({ since: 99, epoch: wroom.epoch });
  assert.equal(joined.recovered, false);
  assert.equal(c.lost.length, 1);
  assert.equal(c.lost[0].reason, "history");
  assert.equal(c.lost[0].since, 99);
  assert.equal(room.offset, 1);
  await wroom.publish("two");
  await c.waitCount(1);
  assert.deepEqual(c.offsets(), [2]);

  const other = await connect("r");
  const room2 = other.room(name);
  const c2 = collect(room2);
  await room2.join({ since: 0, epoch: "not-the-epoch" });
  assert.equal(c2.lost[0].reason, "epoch");
  assert.equal(room2.epoch, wroom.epoch);
});

test("tokenExpiry reads exp from a JWT and tolerates junk", () => {
  const payload = Buffer.from(JSON.stringify({ sub: "a", exp: 1234 })).toString("base64url");
  assert.equal(tokenExpiry(`x.${payload}.y`), 1234);
  assert.equal(tokenExpiry("junk"), null);
});

test("the constructor refuses to run without a WebSocket", () => {
  const saved = globalThis.WebSocket;
  try {
    globalThis.WebSocket = undefined;
    assert.throws(() => new Roomcast(URL), /no WebSocket/);
  } finally {
    globalThis.WebSocket = saved;
  }
});
