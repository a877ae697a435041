// permessage-deflate from Node: the `ws` package (perMessageDeflate on, its default) against
// real roomcast processes started here with compression on, in each mode. Checks the
// handshake's answer, then chats with small and large messages: the large ones must arrive
// compressed (far fewer bytes read off the socket than the frame), a member that did not
// offer compression gets the same messages uncompressed, and the unchanged JS client runs
// over Node's own WebSocket and over ws, both of which negotiate by themselves.

import { test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";

import WebSocket from "ws";

import { Roomcast } from "../roomcast.js";
import { startNode, unique, until, collect } from "./helpers.mjs";

/** A chat message of about 30 KB: records such as a chat history page. */
function largeData() {
  const items = [];
  for (let i = 0; i < 200; i++) {
    items.push({ id: 1000 + i, user: `user_${i % 17}`, text: `message number ${i} about the release plan`, ts: 1733400000000 + i });
  }
  return { items };
}

/** A raw ws connection as `user`, keeping every frame it receives and its handshake response. */
async function open(node, user, perMessageDeflate) {
  const ws = new WebSocket(`ws://${node.addr}/ws?user=${user}`, { perMessageDeflate });
  const frames = [];
  let response = null;
  ws.on("upgrade", (res) => {
    response = res;
  });
  ws.on("message", (data, isBinary) => {
    assert.equal(isBinary, false, "roomcast sends text frames");
    frames.push(JSON.parse(data.toString()));
  });
  await once(ws, "open");
  const conn = {
    ws,
    frames,
    response,
    extensions: response.headers["sec-websocket-extensions"],
    bytesRead: () => response.socket.bytesRead,
    send: (frame) => ws.send(JSON.stringify(frame)),
    /** The first frame (from `from` on) that `pred` accepts. */
    next: async (pred, from = 0) => {
      await until(() => frames.slice(from).some(pred), "an expected frame");
      return frames.slice(from).find(pred);
    },
  };
  await conn.next((f) => f.type === "welcome");
  return conn;
}

async function join(conn, room, id) {
  conn.send({ type: "join", room, id });
  const reply = await conn.next((f) => f.id === id);
  assert.equal(reply.type, "joined", JSON.stringify(reply));
}

for (const mode of ["shared", "context"]) {
  test(`ws with perMessageDeflate negotiates and chats, mode ${mode}`, { timeout: 30_000 }, async () => {
    const node = await startNode({ ROOMCAST_COMPRESSION__ENABLED: "true", ROOMCAST_COMPRESSION__MODE: mode });
    const conns = [];
    try {
      const [alice, bob, carol] = await Promise.all([
        open(node, unique("alice"), true),
        open(node, unique("bob"), true),
        open(node, unique("carol"), false),
      ]);
      conns.push(alice, bob, carol);
      // The answer to ws's offer (`permessage-deflate; client_max_window_bits`).
      for (const c of [alice, bob]) {
        assert.match(c.extensions ?? "", /^permessage-deflate\b/, "answered with permessage-deflate");
        assert.match(c.ws.extensions, /permessage-deflate/, "ws took the answer");
      }
      if (mode === "shared") assert.match(alice.extensions, /server_no_context_takeover/);
      assert.equal(carol.extensions, undefined, "no offer, no extension");

      const room = unique("deflate");
      await join(alice, room, 1);
      await join(bob, room, 1);
      await join(carol, room, 1);
      const large = largeData();
      const largeText = JSON.stringify(large);
      const marks = [alice, carol].map((c) => [c.frames.length, c.bytesRead()]);
      // bob's large publish goes out compressed too (ws compresses above 1 KiB): the node
      // inflates it.
      bob.send({ type: "publish", room, id: 2, data: { text: "hi" } });
      bob.send({ type: "publish", room, id: 3, data: large });
      assert.equal((await bob.next((f) => f.id === 3)).type, "ack");
      for (const [i, c] of [alice, carol].entries()) {
        const [from, bytesBefore] = marks[i];
        const small = await c.next((f) => f.type === "message" && f.data.text === "hi", from);
        const big = await c.next((f) => f.type === "message" && Array.isArray(f.data.items), from);
        assert.deepEqual(small.data, { text: "hi" });
        assert.deepEqual(big.data, large);
        assert.equal(big.offset, small.offset + 1);
        const read = c.bytesRead() - bytesBefore;
        if (c === alice) {
          assert.ok(read < largeText.length / 3, `compressed: ${read} bytes read for a ${largeText.length}-byte payload`);
        } else {
          assert.ok(read > largeText.length, `uncompressed: ${read} bytes read for a ${largeText.length}-byte payload`);
        }
      }
      // Several more in a row, small and large, in order (context mode carries its window on).
      for (let id = 4; id < 10; id++) {
        bob.send({ type: "publish", room, id, data: id % 2 ? large : { text: `line ${id}` } });
      }
      await until(() => alice.frames.filter((f) => f.type === "message").length >= 8, "8 messages");
      const got = alice.frames.filter((f) => f.type === "message").map((f) => f.data);
      assert.deepEqual(got.slice(2), [4, 5, 6, 7, 8, 9].map((id) => (id % 2 ? large : { text: `line ${id}` })));
    } finally {
      for (const c of conns) c.ws.terminate();
      await node.stop();
    }
  });
}

test("Node's own WebSocket negotiates permessage-deflate too, and the client chats over it", { timeout: 30_000 }, async () => {
  const node = await startNode({ ROOMCAST_COMPRESSION__ENABLED: "true" });
  const ws = new globalThis.WebSocket(`ws://${node.addr}/ws?user=${unique("n")}`);
  try {
    await once(ws, "open");
    assert.match(ws.extensions, /^permessage-deflate\b/);
  } finally {
    ws.close();
  }
  const a = new Roomcast(node.url, { user: unique("a") });
  const b = new Roomcast(node.url, { user: unique("b") });
  try {
    await Promise.all([a.connect(), b.connect()]);
    const name = unique("r");
    const got = collect(a.room(name));
    await a.room(name).join();
    await b.room(name).join();
    const large = largeData();
    await b.room(name).publish(large);
    await got.waitCount(1);
    assert.deepEqual(got.messages[0].data, large);
  } finally {
    a.close();
    b.close();
    await node.stop();
  }
});

test("the JS client runs unchanged over ws, which negotiates permessage-deflate by itself", { timeout: 30_000 }, async () => {
  const node = await startNode({ ROOMCAST_COMPRESSION__ENABLED: "true" });
  const answers = [];
  // ws as the client's WebSocket, as a Node app would pass it; the subclass only records the
  // handshake's answer.
  class Recording extends WebSocket {
    constructor(...args) {
      super(...args);
      this.on("upgrade", (res) => answers.push(res.headers["sec-websocket-extensions"]));
    }
  }
  const a = new Roomcast(node.url, { user: unique("a"), WebSocket: Recording });
  const b = new Roomcast(node.url, { user: unique("b"), WebSocket: Recording });
  try {
    await Promise.all([a.connect(), b.connect()]);
    assert.equal(answers.length, 2);
    for (const answer of answers) assert.match(answer ?? "", /^permessage-deflate\b/);
    const name = unique("r");
    const got = collect(a.room(name));
    await a.room(name).join();
    await b.room(name).join();
    const large = largeData();
    await b.room(name).publish({ text: "hello" });
    await b.room(name).publish(large);
    await got.waitCount(2);
    assert.deepEqual(
      got.messages.map((m) => m.data),
      [{ text: "hello" }, large],
    );
  } finally {
    a.close();
    b.close();
    await node.stop();
  }
});
