// Tokens: the browser way of presenting one (subprotocol `bearer.<jwt>`), expiry (close 4001:
// no reconnect with a fixed token; a fresh one from a token function), refresh before expiry.
// Against the server tests/js_client.rs started with authentication on (ROOMCAST_AUTH_URL).

import { test, after } from "node:test";
import assert from "node:assert/strict";

import { Roomcast } from "../roomcast.js";
import { env, unique, waitEvent, collect, sleep, hs256 } from "./helpers.mjs";

const URL = env("ROOMCAST_AUTH_URL");
const SECRET = env("ROOMCAST_AUTH_SECRET");
const clients = [];
after(() => {
  for (const c of clients) c.close();
});

function client(options) {
  const c = new Roomcast(URL, { reconnect: { initialDelayMs: 50, maxDelayMs: 200 }, ...options });
  clients.push(c);
  return c;
}

test("the token travels as a subprotocol entry and names the user; ?user= is not sent", { timeout: 10_000 }, async () => {
  const user = unique("alice");
  const c = client({ token: hs256(SECRET, user, 60), user: "ignored-with-a-token" });
  const welcome = await c.connect();
  assert.equal(welcome.user, user);
});

test("a refused handshake (bad token) is retried with backoff, never opened", { timeout: 10_000 }, async () => {
  const c = client({ token: hs256("wrong-secret-wrong-secret-wrong-secret", "eve", 60) });
  const closes = [];
  c.on("close", (e) => closes.push(e));
  c.connect().catch(() => {});
  await sleep(600);
  assert.equal(c.state === "open", false);
  assert.ok(closes.length >= 2, `retried: ${closes.length}`);
  assert.ok(closes.every((e) => e.code === 1006 && e.reconnect));
  c.close();
});

test("close 4001 with a fixed token stops; a new token and connect() resume the rooms", { timeout: 15_000 }, async () => {
  const user = unique("bob");
  const c = client({ token: hs256(SECRET, user, 2) });
  await c.connect();
  const name = unique("r");
  const room = c.room(name);
  const col = collect(room);
  await room.join();
  await room.publish(1);
  const close = await waitEvent(c, "close", () => true, 5_000);
  assert.equal(close.code, 4001);
  assert.equal(close.reconnect, false, "the same token would be refused");
  assert.equal(c.state, "closed");
  await sleep(300);
  assert.equal(c.state, "closed");

  const writer = client({ token: hs256(SECRET, unique("w"), 60) });
  await writer.connect();
  await (await writer.join(name)).publish(2);
  c.setToken(hs256(SECRET, user, 60));
  const recovered = waitEvent(room, "recovered");
  await c.connect();
  assert.equal((await recovered).missed, 1);
  await col.waitCount(2);
  assert.deepEqual(col.offsets(), [1, 2]);
});

test("with a token function, close 4001 reconnects at once with a fresh token and resumes", { timeout: 15_000 }, async () => {
  const user = unique("carol");
  let issued = 0;
  const c = client({
    token: () => {
      issued++;
      return hs256(SECRET, user, 2);
    },
    autoRefresh: false,
  });
  await c.connect();
  const room = c.room(unique("r"));
  const col = collect(room);
  await room.join();
  await room.publish(1);
  const close = await waitEvent(c, "close", () => true, 5_000);
  assert.equal(close.code, 4001);
  assert.equal(close.reconnect, true);
  assert.equal(close.delayMs, 0);
  await waitEvent(room, "recovered");
  assert.equal(issued, 2);
  await room.publish(2);
  await col.waitCount(2);
  assert.deepEqual(col.offsets(), [1, 2]);
});

test("with a token function, the session is refreshed before expiry and never closed", { timeout: 15_000 }, async () => {
  const user = unique("dave");
  let issued = 0;
  const c = client({
    token: () => {
      issued++;
      return hs256(SECRET, user, 2);
    },
  });
  const closes = [];
  c.on("close", (e) => closes.push(e));
  const refreshed = [];
  c.on("refreshed", (r) => refreshed.push(r));
  await c.connect();
  await sleep(4_500);
  assert.deepEqual(closes, [], "outlived three tokens without a close");
  assert.ok(refreshed.length >= 2, `refreshed ${refreshed.length} times`);
  assert.ok(issued >= 3);
  assert.equal(c.state, "open");
});

test("refresh with another user's token is refused with token_wrong_user", { timeout: 10_000 }, async () => {
  const c = client({ token: hs256(SECRET, unique("erin"), 60) });
  await c.connect();
  await assert.rejects(c.refresh(hs256(SECRET, "someone-else", 60)), { code: "token_wrong_user" });
  assert.equal(c.state, "open");
});
