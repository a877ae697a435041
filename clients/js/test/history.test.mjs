// History from the client: `join(room, {rewind})` delivers the latest messages right before
// live ones, once (a reconnect resumes, never rewinds again), and `history()` pages back and
// forth; refusals reject with their codes. Against the real server tests/js_client.rs started.

import { test, after } from "node:test";
import assert from "node:assert/strict";

import { Roomcast } from "../roomcast.js";
import { env, unique, collect, sleep } from "./helpers.mjs";

const URL = env("ROOMCAST_URL");
const clients = [];

async function connect(prefix = "h", options = {}) {
  const client = new Roomcast(URL, { user: unique(prefix), ...options });
  clients.push(client);
  await client.connect();
  return client;
}

after(() => {
  for (const c of clients) c.close();
});

/** A room with `n` messages {i} published by a fresh client. */
async function roomWith(n) {
  const name = unique("hist");
  const publisher = await connect("pub");
  const room = await publisher.join(name);
  for (let i = 1; i <= n; i++) await room.publish({ i });
  return { name, publisher: room };
}

test("join with rewind delivers the latest messages, then live ones without gap", { timeout: 15_000 }, async () => {
  const { name, publisher } = await roomWith(12);
  const reader = await connect("reader");
  const room = reader.room(name);
  const seen = collect(room);
  const joined = await room.join({ rewind: 5 });
  assert.equal(joined.offset, 12);
  await seen.waitCount(5);
  assert.deepEqual(seen.offsets(), [8, 9, 10, 11, 12]);
  assert.deepEqual(seen.messages[0].data, { i: 8 });
  await publisher.publish({ i: 13 });
  await seen.waitCount(6);
  assert.deepEqual(seen.offsets(), [8, 9, 10, 11, 12, 13]);
  assert.equal(room.offset, 13);
  assert.deepEqual(seen.lost, [], "no gap reported");

  // A reconnect resumes from the position: nothing is rewound twice.
  reader._ws.close();
  await new Promise((resolve) => room.once("rejoined", resolve));
  await publisher.publish({ i: 14 });
  await seen.waitCount(7);
  await sleep(100);
  assert.deepEqual(seen.offsets(), [8, 9, 10, 11, 12, 13, 14]);

  // More than the room holds: all of it.
  const other = await connect("other");
  const all = collect(other.room(name));
  await other.room(name).join({ rewind: 1000 });
  await all.waitCount(14);
  assert.deepEqual(all.offsets(), Array.from({ length: 14 }, (_, i) => i + 1));
});

test("history pages back and forth, and refusals reject with their codes", { timeout: 15_000 }, async () => {
  const { name } = await roomWith(25);
  const reader = await connect("pager");
  const offsets = (page) => page.messages.map((m) => m.offset);

  const seen = [];
  let before;
  for (;;) {
    const page = await reader.history(name, { before, limit: 10 });
    assert.equal(page.type, "history");
    assert.equal(page.top, 25);
    seen.push(...offsets(page));
    if (!page.more) break;
    before = page.messages.at(-1).offset;
  }
  assert.deepEqual(seen, Array.from({ length: 25 }, (_, i) => 25 - i));

  const forward = await reader.room(name).history({ after: 20, order: "oldest_first", limit: 3 });
  assert.deepEqual(offsets(forward), [21, 22, 23]);
  assert.equal(forward.more, true);

  await assert.rejects(reader.history(name, { before: 4, after: 3 }), { code: "bad_range" });
  await assert.rejects(reader.history(unique("nothing")), { code: "unknown_room" });
  await assert.rejects(reader.history(name, { order: "sideways" }), { code: "bad_request" });
  assert.equal(reader.state, "open");
});
