// The application's backend in the loop (docs/backend.md) as the client shows it: a publish the
// backend replaced arrives with its data and `id`; one it refused rejects with `denied` and the
// backend's code in `appCode`, after no retry. The backend is a real HTTP server in this process;
// the node a real roomcast process configured through ROOMCAST_PROXY__* variables.

import { createServer } from "node:http";
import { createHmac, timingSafeEqual } from "node:crypto";
import { once } from "node:events";
import { test, after } from "node:test";
import assert from "node:assert/strict";

import { Roomcast } from "../roomcast.js";
import { unique, collect, startNode } from "./helpers.mjs";

const SECRET = "a-shared-secret-of-at-least-32-bytes!";
const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

/** The backend: verifies the signature as docs/backend.md says, then answers by `data.action`. */
async function backend() {
  const seen = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks);
      const ts = req.headers["x-roomcast-timestamp"] ?? "";
      const want = "sha256=" + createHmac("sha256", SECRET).update(`${ts}.`).update(raw).digest("hex");
      const given = Buffer.from(req.headers["x-roomcast-signature"] ?? "");
      const ok = given.length === want.length && timingSafeEqual(given, Buffer.from(want));
      seen.push({ ok });
      if (!ok) return res.writeHead(401).end();
      const { data } = JSON.parse(raw);
      const answer =
        data?.action === "deny"
          ? { error: { code: "spam", message: "no spam here" } }
          : { result: { data: { replaced: true }, id: "m-1" } };
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanups.push(() => new Promise((r) => server.close(r)));
  return { url: `http://127.0.0.1:${server.address().port}`, seen };
}

test("a publish the backend replaced carries its id; one it refused rejects with denied and appCode", { timeout: 20_000 }, async () => {
  const b = await backend();
  const node = await startNode({
    ROOMCAST_PROXY__SECRET: SECRET,
    ROOMCAST_PROXY__PUBLISH: `[{room="chat:*", url="${b.url}/publish"}]`,
  });
  cleanups.push(() => node.stop("SIGKILL"));
  const client = new Roomcast(`ws://${node.addr}/ws`, { user: unique("u") });
  cleanups.push(() => client.close());
  await client.connect();
  const room = client.room(`chat:${unique("r")}`);
  const got = collect(room);
  await room.join();

  await room.publish({ action: "replace" });
  await got.waitCount(1);
  assert.deepEqual(got.messages[0].data, { replaced: true });
  assert.equal(got.messages[0].id, "m-1");

  await assert.rejects(room.publish({ action: "deny" }), (err) => {
    assert.equal(err.code, "denied");
    assert.equal(err.appCode, "spam");
    assert.equal(err.message, "no spam here");
    return true;
  });
  assert.equal(b.seen.length, 2, "refused once, not retried");
  assert.ok(b.seen.every((s) => s.ok), "every call signed");
});
