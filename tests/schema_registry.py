#!/usr/bin/env python3
"""A small schema registry for the Avro tests: the calls a Confluent serializer and the gateway
make, kept in memory. usage: schema_registry.py PORT (prints "ready" once listening)

POST /subjects/{subject}/versions  {"schema": "..."} -> {"id": N} (the same schema, the same id)
GET  /subjects/{subject}/versions/latest -> {"subject", "version", "id", "schema"}
GET  /schemas/ids/{id} -> {"schema": "..."}
"""
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SCHEMAS = {}      # id -> schema text
SUBJECTS = {}     # subject -> [ids]


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/vnd.schemaregistry.v1+json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        parts = [urllib.parse.unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
            text = json.dumps(json.loads(body["schema"]), separators=(",", ":"), sort_keys=True)
            with LOCK:
                sid = next((i for i, s in SCHEMAS.items() if s == text), None)
                if sid is None:
                    sid = len(SCHEMAS) + 1
                    SCHEMAS[sid] = text
                ids = SUBJECTS.setdefault(parts[1], [])
                if sid not in ids:
                    ids.append(sid)
            return self.answer(200, {"id": sid})
        self.answer(404, {"error_code": 404, "message": "not found"})

    def do_GET(self):
        parts = [urllib.parse.unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]
        with LOCK:
            if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and int(parts[2]) in SCHEMAS:
                return self.answer(200, {"schema": SCHEMAS[int(parts[2])]})
            if len(parts) == 4 and parts[0] == "subjects" and parts[3] == "latest" and SUBJECTS.get(parts[1]):
                ids = SUBJECTS[parts[1]]
                return self.answer(200, {"subject": parts[1], "version": len(ids), "id": ids[-1],
                                         "schema": SCHEMAS[ids[-1]]})
        self.answer(404, {"error_code": 40401, "message": "not found"})


srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print("ready", flush=True)
srv.serve_forever()
