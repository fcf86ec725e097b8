#!/usr/bin/env python3
"""A stand-in for the router's registry (Houston) in the tests: GraphQL over HTTP and an SSE
invalidation channel, in the original's shapes.

    registry_server.py PORT API_KEY

POST /graphql   `sources(id:"APP")` query -> {"data": {"sources": [{"clickstream": [...]}]}};
                `createToken(username:, password:)` -> a token valid 3 s (`decoded.exp`).
                Requests must carry `authorization: API_KEY` or an issued token.
GET  /sse       `event: clickstream` / `data: {"appId": ...}` after each POST /announce,
                `event: heartbeat` every second.
POST /set       {"app": "...", "clickstream": [{"name", "topic", "enabled"}]}
POST /announce  {"appId": "..."}
GET  /stats     {"queries": {app: n}, "tokens": n}
"""
import json
import queue
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, API_KEY = int(sys.argv[1]), sys.argv[2]
apps, queries, tokens, listeners = {}, {}, {}, []
lock = threading.Lock()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def send(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def authorized(self):
        a = self.headers.get("authorization")
        with lock:
            return a == API_KEY or (a in tokens and tokens[a] > time.time())

    def do_POST(self):
        if self.path == "/graphql":
            q = self.body().get("query", "")
            m = re.search(r'createToken\(username:"([^"]*)", password:"([^"]*)"\)', q)
            if m:
                if m.group(2) != "secret":
                    return self.send(200, {"data": {"createToken": {"success": False, "message": "bad password", "token": None}}})
                with lock:
                    t = f"tok-{len(tokens)}"
                    exp = int(time.time()) + 63  # the router renews a minute before exp: ~3 s
                    tokens[t] = exp
                return self.send(200, {"data": {"createToken": {"success": True, "message": "", "token": t, "decoded": {"exp": exp}}}})
            if not self.authorized():
                return self.send(401, {"errors": [{"message": "unauthorized"}]})
            m = re.search(r'sources\(id:"([^"]*)"\)', q)
            app = m.group(1) if m else None
            with lock:
                queries[app] = queries.get(app, 0) + 1
                cs = apps.get(app, [])
            return self.send(200, {"data": {"sources": [{"clickstream": cs}]}})
        if self.path == "/set":
            b = self.body()
            with lock:
                apps[b["app"]] = b["clickstream"]
            return self.send(200, {})
        if self.path == "/announce":
            b = self.body()
            with lock:
                for q in listeners:
                    q.put(("clickstream", json.dumps({"appId": b["appId"]})))
            return self.send(200, {})
        self.send(404, {})

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                return self.send(200, {"queries": queries, "tokens": len(tokens)})
        if self.path == "/sse":
            if not self.authorized():
                return self.send(401, {})
            q = queue.Queue()
            with lock:
                listeners.append(q)
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            n = 0
            try:
                while True:
                    try:
                        ev, data = q.get(timeout=1)
                    except queue.Empty:
                        ev, data = "heartbeat", "{}"
                    n += 1
                    frame = f"id: {n}\nevent: {ev}\ndata: {data}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                    self.wfile.flush()
            except OSError:
                pass
            finally:
                with lock:
                    listeners.remove(q)
            return
        self.send(404, {})


ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
