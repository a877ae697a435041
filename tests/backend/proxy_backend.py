#!/usr/bin/env python3
"""An application backend for roomcast's proxies (tests/proxy.rs, the proxy benchmark).

Python 3 standard library only. Listens on 127.0.0.1:PORT (0: any free port; the port is
printed on stdout's first line), verifies every request's signature as docs/backend.md tells
a backend to (HMAC-SHA256 of "<timestamp>.<body>" with the shared secret, compared in constant
time; a bad or missing signature gets 401), records every request, and answers by path:

  POST /connect   token "deny" -> error {code: 4403}; token "set:NAME" -> result {user: NAME,
                  rooms: ["home:NAME"], info: {plan: "gold"}}; token "many:N" -> result
                  {rooms: ["r0", ..., "rN-1"]}; anything else -> result {}.
  POST /join      user or room listed by /control (deny_users, deny_rooms) -> error
                  {code: "not_allowed"}; else result {}.
  POST /publish   data.action "deny" -> error {code: "spam", message: "no spam here"};
                  "replace" -> result {data: {replaced: true, text: data.text}, id: "msg-N"};
                  else result {} (allow as sent). /publish/fast: result {} at once, no record
                  (for the benchmark).
  POST /hang      waits until POST /release (or 60 s), then result {}.
  POST /redirect  302 to /join (the node must not follow it).
  POST /big       result {} padded to 64 KiB (past a small proxy.max_response_bytes).
  POST /control   JSON {deny_users: [...], deny_rooms: [...]} replaces the join rules.
  POST /release   lets every /hang waiting now (and later, until /control) answer.
  GET  /requests  every request so far: [{path, body, signature_ok}].

Usage: proxy_backend.py PORT SECRET
"""

import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = b""
LOCK = threading.Lock()
REQUESTS = []
RULES = {"deny_users": [], "deny_rooms": []}
RELEASE = threading.Event()
COUNTER = [0]
# How old a signed request may be: a captured request replayed later is refused.
MAX_AGE_SECS = 300


def signature_ok(headers, body):
    """The verification docs/backend.md describes."""
    timestamp = headers.get("X-Roomcast-Timestamp", "")
    given = headers.get("X-Roomcast-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_AGE_SECS:
        return False
    mac = hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), given)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/requests":
            with LOCK:
                self.answer(200, REQUESTS)
        else:
            self.answer(404, {})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/publish/fast":
            return self.answer(200, {"result": {}})
        if self.path == "/control":
            with LOCK:
                RULES.update(json.loads(raw))
                RELEASE.clear()
            return self.answer(200, {})
        if self.path == "/release":
            RELEASE.set()
            return self.answer(200, {})
        ok = signature_ok(self.headers, raw)
        body = json.loads(raw) if raw else None
        with LOCK:
            REQUESTS.append({"path": self.path, "body": body, "signature_ok": ok})
        if not ok:
            return self.answer(401, {"error": "bad signature"})
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/join")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/big":
            return self.answer(200, {"result": {"pad": "x" * 65536}})
        route = getattr(self, "route_" + self.path.strip("/"), None)
        if route is None:
            return self.answer(404, {})
        self.answer(200, route(body))

    def route_connect(self, body):
        token = body.get("token") or ""
        if token == "deny":
            return {"error": {"code": 4403, "message": "banned"}}
        if token.startswith("many:"):
            return {"result": {"rooms": ["r%d" % i for i in range(int(token[5:]))]}}
        if token.startswith("set:"):
            name = token[4:]
            return {"result": {"user": name, "rooms": ["home:" + name], "info": {"plan": "gold"}}}
        return {"result": {}}

    def route_join(self, body):
        with LOCK:
            denied = body["user"] in RULES["deny_users"] or body["room"] in RULES["deny_rooms"]
        if denied:
            return {"error": {"code": "not_allowed", "message": "not in this room"}}
        return {"result": {}}

    def route_publish(self, body):
        data = body.get("data")
        action = data.get("action") if isinstance(data, dict) else None
        if action == "deny":
            return {"error": {"code": "spam", "message": "no spam here"}}
        if action == "replace":
            with LOCK:
                COUNTER[0] += 1
                n = COUNTER[0]
            return {"result": {"data": {"replaced": True, "text": data.get("text")}, "id": "msg-%d" % n}}
        return {"result": {}}

    def route_hang(self, body):
        RELEASE.wait(60)
        return {"result": {}}


def main():
    global SECRET
    port, SECRET = int(sys.argv[1]), sys.argv[2].encode()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
