// permessage-deflate in headless Chromium (Debian's, never a downloaded one) through
// playwright-core: the demo page, unchanged, on roomcast nodes with compression on. For each
// node, two people open the demo; the DevTools protocol shows each page's WebSocket handshake
// (what Chromium offers, what the node answers), and they chat with short and long lines
// (the long ones above the node's min_bytes, so they travel compressed). Run by
// tests/browser.rs, which starts the nodes and passes:
//   ROOMCAST_DEFLATE_URLS  mode=url pairs, comma-separated (shared=http://127.0.0.1:port,…)
//   ROOMCAST_CHROMIUM      the browser executable (/usr/bin/chromium)
// Exits 0 when every check passed.

import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const URLS = need("ROOMCAST_DEFLATE_URLS")
  .split(",")
  .map((pair) => pair.split("="));
const CHROMIUM = need("ROOMCAST_CHROMIUM");
const WAIT = { timeout: 15_000 };

function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set: run this through \`cargo test --test browser\` (or scripts/test)`);
    process.exit(2);
  }
  return value;
}

setTimeout(() => {
  console.error("deflate.e2e.mjs: no end within 60 s");
  process.exit(1);
}, 60_000).unref();

/** A header's value whatever its case (the DevTools protocol keeps the sender's). */
function header(headers, name) {
  const key = Object.keys(headers ?? {}).find((k) => k.toLowerCase() === name);
  return key === undefined ? undefined : headers[key];
}

/**
 * `name` on the demo at `url`, in a fresh context whose WebSocket handshakes are recorded
 * (offer and answer of each) before the page connects.
 */
async function enter(browser, url, name, room) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 640 } });
  const page = await context.newPage();
  page.on("pageerror", (err) => console.error(`[${name}] page error: ${err.message}`));
  const handshakes = [];
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  cdp.on("Network.webSocketWillSendHandshakeRequest", (e) => {
    handshakes.push({ id: e.requestId, offer: header(e.request.headers, "sec-websocket-extensions") });
  });
  cdp.on("Network.webSocketHandshakeResponseReceived", (e) => {
    const h = handshakes.find((x) => x.id === e.requestId);
    if (h) {
      h.status = e.response.status;
      h.answer = header(e.response.headers, "sec-websocket-extensions");
    }
  });
  await page.goto(url);
  await page.fill("#name", name);
  await page.fill("#login-rooms", room);
  await page.click("#enter");
  await page.waitForSelector(`#status[data-state="open"]`, WAIT);
  await page.waitForSelector(`#rooms li.active[data-room="${room}"]`, WAIT);
  return { name, context, page, handshakes };
}

async function say(who, text) {
  await who.page.fill("#text", text);
  await who.page.press("#text", "Enter");
}

async function waitShows(who, texts) {
  await who.page.waitForFunction(
    (want) => {
      const have = [...document.querySelectorAll("#messages li.msg .text")].map((e) => e.textContent);
      return want.every((t) => have.includes(t));
    },
    texts,
    WAIT,
  );
}

/** A long chat line (~1,500 characters), well above min_bytes. */
function longLine(who) {
  const words = "the release went out this morning and the dashboards look fine so far".split(" ");
  let text = `${who}: `;
  for (let i = 0; text.length < 1_500; i++) text += `${words[i % words.length]} `;
  return text.trim();
}

const browser = await chromium.launch({ executablePath: CHROMIUM });
try {
  for (const [mode, url] of URLS) {
    const room = `deflate-${mode}`;
    console.log(`[${mode}] two people open the demo at ${url}`);
    const alice = await enter(browser, url, "alice", room);
    const bob = await enter(browser, url, "bob", room);
    for (const who of [alice, bob]) {
      const h = who.handshakes.at(-1);
      assert.ok(h, `${who.name}: no WebSocket handshake seen`);
      console.log(`[${mode}] ${who.name}: Chromium offered "${h.offer}", the node answered ${h.status} "${h.answer}"`);
      assert.match(h.offer ?? "", /permessage-deflate/, "Chromium offers permessage-deflate");
      assert.equal(h.status, 101);
      assert.match(h.answer ?? "", /^permessage-deflate\b/, "the node accepted permessage-deflate");
      if (mode === "shared") assert.match(h.answer, /server_no_context_takeover/);
    }
    console.log(`[${mode}] they chat, short and long lines`);
    const lines = [
      [alice, "Hi Bob, is this compressed?"],
      [bob, longLine("bob")],
      [alice, longLine("alice")],
      [bob, "Looks like it. Same page, nothing changed in the client."],
    ];
    for (const [who, text] of lines) {
      await say(who, text);
      await waitShows(who, [text]);
    }
    for (const who of [alice, bob]) await waitShows(who, lines.map(([, t]) => t));
    const shownByBob = await bob.page.$$eval("#messages li.msg .text", (els) => els.map((e) => e.textContent));
    assert.deepEqual(shownByBob.slice(-4), lines.map(([, t]) => t), "in order, whole");
    await alice.context.close();
    await bob.context.close();
    console.log(`[${mode}] ok`);
  }
} finally {
  await browser.close();
}
console.log("deflate.e2e.mjs: all checks passed");
