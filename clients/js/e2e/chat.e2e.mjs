// End to end in headless Chromium (Debian's, never a downloaded one) through playwright-core:
// the demo page served by roomcast behind a balancer. Two people chat (presence, typing, a
// second room), a third one joining later sees their earlier messages; alice's node restarts while her network is down and bob keeps writing: she
// comes back through the balancer and shows every message, no gap; then bob's node restarts
// under him and he follows its goaway hint back. Run by tests/browser.rs, which starts Redis,
// two roomcast nodes and haproxy, and passes:
//   ROOMCAST_LB_URL      the balancer (http://127.0.0.1:port)
//   ROOMCAST_CHROMIUM    the browser executable (/usr/bin/chromium)
//   ROOMCAST_SCREENSHOT  where to save a screenshot of the demo
// To restart a node it prints `@@restart <node-id>` and waits for `@@restarted <node-id>` on
// stdin. Exits 0 when every check passed.

import assert from "node:assert/strict";
import readline from "node:readline";
import { chromium } from "playwright-core";

const LB = need("ROOMCAST_LB_URL");
const CHROMIUM = need("ROOMCAST_CHROMIUM");
const SCREENSHOT = need("ROOMCAST_SCREENSHOT");
const ROOM = "lobby";
const WAIT = { timeout: 15_000 };

function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set: run this through \`cargo test --test browser\` (or scripts/test)`);
    process.exit(2);
  }
  return value;
}

// Never hang: the whole run is bounded (tests/browser.rs bounds it too).
setTimeout(() => {
  console.error("chat.e2e.mjs: no end within 75 s");
  process.exit(1);
}, 75_000).unref();

// --- the control channel to tests/browser.rs ---

const restarted = new Map();
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const m = /^@@restarted (\S+)/.exec(line);
  if (m) restarted.get(m[1])?.();
});

function restartNode(id) {
  return new Promise((resolve) => {
    restarted.set(id, resolve);
    console.log(`@@restart ${id}`);
  });
}

const t0 = Date.now();
function step(text) {
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${text}`);
}

// --- the page, as a person uses it ---

/** A new browser context (its own storage) on the demo, entered as `name` into the room. */
async function enter(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 640 } });
  const page = await context.newPage();
  page.on("pageerror", (err) => console.error(`[${name}] page error: ${err.message}`));
  await page.goto(LB);
  await page.fill("#name", name);
  await page.fill("#login-rooms", ROOM);
  await page.click("#enter");
  await page.waitForSelector(`#status[data-state="open"]`, WAIT);
  await page.waitForSelector(`#rooms li.active[data-room="${ROOM}"]`, WAIT);
  await page.waitForSelector(`#users li.me`, WAIT);
  return { name, context, page, node: await page.getAttribute("#status", "data-node") };
}

/** Types `text` and sends it; resolves once the page shows it back (the server ordered it). */
async function say(who, text) {
  await who.page.fill("#text", text);
  await who.page.press("#text", "Enter");
  await who.page.waitForFunction(
    (t) => [...document.querySelectorAll("#messages li.msg .text")].some((e) => e.textContent === t),
    text,
    WAIT,
  );
}

/** The chat messages a page shows: offset, author, text. */
function shown(who) {
  return who.page.$$eval("#messages li.msg", (els) =>
    els.map((e) => ({ offset: Number(e.dataset.offset), from: e.dataset.from, text: e.querySelector(".text").textContent })),
  );
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

const browser = await chromium.launch({ executablePath: CHROMIUM });
try {
  step("two people open the demo through the balancer");
  const alice = await enter(browser, "alice");
  let bob = await enter(browser, "bob");
  // Round robin decides the nodes; the restart below needs them apart.
  for (let i = 0; bob.node === alice.node && i < 8; i++) {
    await bob.context.close();
    bob = await enter(browser, "bob");
  }
  assert.notEqual(bob.node, alice.node, "the pages never landed on different nodes");
  step(`alice is on ${alice.node}, bob on ${bob.node}`);

  step("presence: each sees both");
  for (const who of [alice, bob]) {
    await who.page.waitForFunction(
      () => [...document.querySelectorAll("#users li")].map((e) => e.textContent).join(",") === "alice,bob",
      null,
      WAIT,
    );
  }

  step("they chat");
  const chat = [
    [alice, "Hi Bob! Are you on the other server?"],
    [bob, `Yes, I'm on ${bob.node}. Messages cross nodes through Redis.`],
    [alice, "Let's restart mine and see what happens."],
  ];
  for (const [who, text] of chat) await say(who, text);
  await waitShows(alice, chat.map(([, t]) => t));
  await waitShows(bob, chat.map(([, t]) => t));

  step("carol opens the demo later and sees the earlier messages (join with rewind)");
  const carol = await enter(browser, "carol");
  await waitShows(carol, chat.map(([, t]) => t));
  assert.deepEqual(await shown(carol), await shown(alice), "the same messages, offsets and order");
  await carol.context.close();

  step("typing indicators");
  await bob.page.fill("#text", "");
  await bob.page.type("#text", "hm");
  await alice.page.waitForSelector('#typing:has-text("bob is typing…")', WAIT);
  await bob.page.fill("#text", "");

  step("joining a second room; unread messages there show as a badge");
  for (const who of [alice, bob]) {
    await who.page.fill("#join-room", "random");
    await who.page.press("#join-room", "Enter");
    await who.page.waitForSelector('#rooms li.active[data-room="random"]', WAIT);
  }
  await alice.page.click(`#rooms li[data-room="${ROOM}"]`);
  await say(bob, "Anyone in #random?");
  await alice.page.waitForSelector('#rooms li[data-room="random"] .badge:has-text("1")', WAIT);
  await bob.page.click(`#rooms li[data-room="${ROOM}"]`);
  await bob.page.waitForSelector(`#rooms li.active[data-room="${ROOM}"]`, WAIT);

  step(`alice's network drops while her node ${alice.node} restarts; bob keeps writing`);
  await alice.context.setOffline(true);
  await restartNode(alice.node);
  const meanwhile = [
    "While you were away, your server restarted.",
    "These went through the other node and Redis…",
    "…and you should see all three, in order.",
  ];
  for (const text of meanwhile) await say(bob, text);
  step("alice comes back online");
  await alice.context.setOffline(false);
  await alice.page.waitForSelector('#messages li.notice:has-text("3 missed messages recovered")', { timeout: 20_000 });
  await alice.page.waitForSelector('#status[data-state="open"]', WAIT);
  await waitShows(alice, meanwhile);
  const nodeNow = await alice.page.getAttribute("#status", "data-node");
  step(`alice reconnected (to ${nodeNow}) and recovered what she missed`);

  step("no gap, no duplicate: alice shows exactly what bob shows, in the same order");
  await say(alice, "Got all three. No gap!");
  await waitShows(bob, ["Got all three. No gap!"]);
  const [a, b] = [await shown(alice), await shown(bob)];
  assert.deepEqual(a, b);
  const offsets = a.map((m) => m.offset);
  assert.deepEqual(offsets, [...offsets].sort((x, y) => x - y), "in offset order");
  assert.equal(new Set(offsets).size, offsets.length, "no duplicate");
  assert.deepEqual(
    a.map((m) => m.text),
    [...chat.map(([, t]) => t), ...meanwhile, "Got all three. No gap!"],
  );
  console.log(a.map((m) => `  #${m.offset} ${m.from}: ${m.text}`).join("\n"));

  step("screenshot");
  await bob.page.type("#text", "Nice");
  await alice.page.waitForSelector('#typing:has-text("bob is typing…")', WAIT);
  await alice.page.screenshot({ path: SCREENSHOT });
  await bob.page.fill("#text", "");
  step(`saved ${SCREENSHOT}`);

  step(`bob's node ${bob.node} restarts under him: he follows the goaway hint back`);
  await restartNode(bob.node);
  // The notice stays, however short the hint made the time away.
  await bob.page.waitForSelector('#messages li.notice:has-text("server going away")', WAIT);
  await bob.page.waitForSelector('#status[data-state="open"]', WAIT);
  await say(alice, "Welcome back, Bob.");
  await waitShows(bob, ["Welcome back, Bob."]);
  assert.deepEqual(await shown(bob), await shown(alice));
  for (const who of [alice, bob]) {
    await who.page.waitForFunction(
      () => [...document.querySelectorAll("#users li")].map((e) => e.textContent).join(",") === "alice,bob",
      null,
      WAIT,
    );
  }
} finally {
  await browser.close();
}
step("passed");
process.exit(0);
