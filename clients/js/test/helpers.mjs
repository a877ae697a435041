// Test helpers: the servers tests/js_client.rs started (URLs in the environment), extra real
// roomcast processes and a private redis-server spawned from here, a TCP proxy that can freeze,
// cut or refuse connections, HS256 tokens, and waiting with a deadline.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import net from "node:net";
import os from "node:os";
import { once } from "node:events";

/** An environment variable tests/js_client.rs sets; fails (never skips) without it. */
export function env(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: run these tests through \`cargo test --test js_client\` (or scripts/test), ` +
        "which starts the servers they talk to",
    );
  }
  return value;
}

if (typeof globalThis.WebSocket !== "function") {
  throw new Error("no global WebSocket: run node with --experimental-websocket (Node 20) or Node >= 22");
}

/** Unique names, so tests sharing a server never share a room or user. */
let seq = 0;
export function unique(prefix) {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${seq++}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with the first `event` of `emitter` whose args satisfy `pred`; rejects after `ms`. */
export function waitEvent(emitter, event, pred = () => true, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${ms} ms waiting for "${event}"`));
    }, ms);
    const off = emitter.on(event, (...args) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args.length > 1 ? args : args[0]);
    });
  });
}

/** Polls `cond` until true; rejects after `ms` with `what`. */
export async function until(cond, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(10);
  }
}

/** Collects a room's messages; `waitCount(n)` resolves once n have arrived. */
export function collect(room) {
  const messages = [];
  const lost = [];
  const recovered = [];
  room.on("message", (m) => messages.push(m));
  room.on("lost", (e) => lost.push(e));
  room.on("recovered", (e) => recovered.push(e));
  return {
    messages,
    lost,
    recovered,
    offsets: () => messages.map((m) => m.offset),
    waitCount: (n, ms = 10_000) => until(() => messages.length >= n, `${n} messages (have ${messages.length})`, ms),
  };
}

// --- tokens ---

const b64url = (s) => Buffer.from(s).toString("base64url");

/** An HS256 JWT for `sub`, valid for `ttlSecs` (may be negative). */
export function hs256(secret, sub, ttlSecs, extra = {}) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = b64url(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + ttlSecs, ...extra }));
  const sig = createHmac("sha256", secret).update(`${header}.${claims}`).digest("base64url");
  return `${header}.${claims}.${sig}`;
}

// --- processes (killed when the test process exits, whatever happens) ---

const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

function track(child) {
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** A free loopback port (a listener bound to 0 and closed again). */
export async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/**
 * A real roomcast process (the binary cargo built, ROOMCAST_BIN) on a free port, configured by
 * `ROOMCAST_*` variables in `config`. Resolves once it listens.
 */
export async function startNode(config = {}, { nodeId = unique("n") } = {}) {
  const bin = env("ROOMCAST_BIN");
  const child = track(
    spawn(bin, ["--listen", "127.0.0.1:0", "--node-id", nodeId], {
      // No config/default.toml there: only what the test gives applies.
      cwd: os.tmpdir(),
      env: {
        // Not the variables addressed to this suite (ROOMCAST_URL...): the node would refuse them.
        ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ROOMCAST_"))),
        RUST_LOG: "warn",
        ROOMCAST_LIMITS__CONNECT_RATE_PER_IP: "100000",
        ROOMCAST_LIMITS__CONNECT_BURST_PER_IP: "100000",
        ROOMCAST_LIMITS__MAX_PENDING_CONNECTIONS_PER_IP: "100000",
        ...config,
      },
      stdio: ["ignore", "pipe", "ignore"],
    }),
  );
  const addr = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("roomcast did not start within 10 s")), 10_000);
    child.on("error", (err) => reject(new Error(`cannot start ${bin}: ${err}`)));
    child.on("exit", (code) => reject(new Error(`roomcast exited (${code}) before listening`)));
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = /roomcast listening on (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
  return {
    child,
    nodeId,
    addr,
    url: `http://${addr}`,
    port: Number(addr.split(":").pop()),
    /** Sends `signal` and waits for the process to exit. */
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.kill(signal);
      await exited;
    },
  };
}

/** A private redis-server on a free port (no persistence); `restart()` brings it back empty. */
export async function startRedis() {
  const port = await freePort();
  let child = null;
  const spawnIt = async () => {
    child = track(
      spawn("redis-server", ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no"], {
        stdio: ["ignore", "pipe", "ignore"],
      }),
    );
    await new Promise((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error("redis-server not ready within 10 s")), 10_000);
      child.on("error", (err) =>
        reject(new Error(`cannot start redis-server (${err}): \`scripts/test\` installs it (apt-get install redis-server)`)),
      );
      child.stdout.on("data", (chunk) => {
        out += chunk;
        if (out.includes("Ready to accept connections")) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  };
  await spawnIt();
  const kill = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGKILL");
    await exited;
  };
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill,
    async restart() {
      await kill();
      const deadline = Date.now() + 10_000;
      for (;;) {
        try {
          await spawnIt();
          return;
        } catch (err) {
          // The port may linger a moment after the kill.
          if (Date.now() > deadline) throw err;
          await sleep(50);
        }
      }
    },
  };
}

/**
 * A TCP proxy on a free loopback port in front of `target` ("host:port"). `freeze()` stops
 * forwarding on the open connections without closing them (a dead network path),
 * `muteReplies()` stops only what the server sends (a request arrives, its answer is lost),
 * `cut()` destroys them (the client sees an abnormal close), `refuse = true` drops new ones at
 * once.
 */
export async function startProxy(target) {
  const conns = new Set();
  const proxy = {
    target,
    refuse: false,
    accepted: 0,
    freeze() {
      for (const c of conns) c.frozen = true;
    },
    muteReplies() {
      for (const c of conns) c.muted = true;
    },
    cut() {
      for (const c of conns) {
        c.client.destroy();
        c.upstream.destroy();
      }
      conns.clear();
    },
    async close() {
      this.cut();
      server.close();
    },
  };
  const server = net.createServer((client) => {
    if (proxy.refuse) {
      client.destroy();
      return;
    }
    proxy.accepted++;
    const [host, port] = [proxy.target.slice(0, proxy.target.lastIndexOf(":")), Number(proxy.target.split(":").pop())];
    const upstream = net.connect(port, host);
    const c = { client, upstream, frozen: false, muted: false };
    conns.add(c);
    const forward = (from, to) => {
      from.on("data", (chunk) => {
        if (!c.frozen && !(c.muted && from === upstream)) to.write(chunk);
      });
      // Half-close after what was written is flushed; a frozen path delivers nothing, not even that.
      from.on("end", () => {
        if (!c.frozen) to.end();
      });
    };
    forward(client, upstream);
    forward(upstream, client);
    const kill = () => {
      conns.delete(c);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on("error", kill);
      s.on("close", () => {
        if (client.destroyed && upstream.destroyed) conns.delete(c);
      });
    }
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  proxy.port = server.address().port;
  proxy.url = `http://127.0.0.1:${proxy.port}`;
  return proxy;
}

/** POSTs to the server API with the key tests/js_client.rs configured. */
export async function api(base, path, body) {
  const res = await fetch(base + path, {
    method: "POST",
    headers: { authorization: `Bearer ${env("ROOMCAST_API_KEY")}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.json();
}
