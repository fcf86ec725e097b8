#!/usr/bin/env python3
"""HTTPS clients for tests/https.rs: SSE, WebSocket (wss://, Python websockets), long-poll and
a publish over TLS against a running gateway, then a certificate swap with SIGHUP.

usage: https_client.py CA_FILE INBOUND_TLS_PORT API_TLS_PORT SERVER_PID CERT_FILE KEY_FILE NEW_CERT NEW_KEY

Prints one JSON object with what each client saw. Every wait is bounded (10 s).
"""
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import time
import urllib.parse

from websockets.sync.client import connect as ws_connect

CA, PORT, API, PID, CERT, KEY, NEW_CERT, NEW_KEY = sys.argv[1:9]
PORT, API, PID = int(PORT), int(API), int(PID)
CTX = ssl.create_default_context(cafile=CA)
SUBS = urllib.parse.quote(json.dumps([{"eventType": "tls.event"}]))


def cn(port):
    """The subject CN of the certificate a new handshake gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with CTX.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            subject = dict(x[0] for x in s.getpeercert()["subject"])
            return subject["commonName"]


def publish(i):
    c = http.client.HTTPSConnection("127.0.0.1", PORT, context=CTX, timeout=10)
    body = json.dumps({"specversion": "1.0", "type": "tls.event", "source": "t", "id": f"e{i}", "data": {"i": i}})
    c.request("POST", "/_rig/v1/events", body, {"content-type": "application/cloudevents+json"})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


class Sse:
    def __init__(self):
        self.c = http.client.HTTPSConnection("127.0.0.1", PORT, context=CTX, timeout=10)
        self.c.request("GET", f"/_rig/v1/connection/sse?subscriptions={SUBS}")
        self.r = self.c.getresponse()
        self.status = self.r.status

    def events(self, want):
        """Reads until `want` events of type tls.event (numbers), bounded."""
        got, event, deadline = [], None, time.time() + 10
        while len(got) < want and time.time() < deadline:
            line = self.r.fp.readline().decode().rstrip("\r\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "tls.event":
                got.append(json.loads(line[6:])["data"]["i"])
        return got


out = {"cn_before": cn(PORT), "cn_api": cn(API)}

# SSE over TLS: two published events arrive.
sse = Sse()
out["sse_status"] = sse.status
time.sleep(0.3)
out["publish"] = [publish(i) for i in range(2)]
out["sse"] = sse.events(2)

# WebSocket over TLS.
with ws_connect(f"wss://127.0.0.1:{PORT}/_rig/v1/connection/ws?subscriptions={SUBS}", ssl=CTX,
                open_timeout=10) as ws:
    first = [json.loads(ws.recv(timeout=10))["type"] for _ in range(2)]
    publish(10)
    ev = json.loads(ws.recv(timeout=10))
    out["ws"] = first + [ev["data"]["i"]]

# Long-poll over TLS: the session is created, then the set-up events come back.
c = http.client.HTTPSConnection("127.0.0.1", PORT, context=CTX, timeout=10)
c.request("GET", f"/_rig/v1/connection/longpolling?subscriptions={SUBS}")
r = c.getresponse()
r.read()
cookies = "; ".join(v.split(";")[0] for k, v in r.getheaders() if k.lower() == "set-cookie")
c.request("GET", "/_rig/v1/connection/longpolling", headers={"cookie": cookies})
r = c.getresponse()
out["longpoll"] = [e["type"] for e in json.loads(r.read())["events"]]
c.close()

# The certificate swapped on disk, SIGHUP: new handshakes get the new one, the open SSE
# stream keeps going.
shutil.copy(NEW_CERT, CERT)
shutil.copy(NEW_KEY, KEY)
os.kill(PID, signal.SIGHUP)
deadline = time.time() + 10
while time.time() < deadline and cn(PORT) == out["cn_before"]:
    time.sleep(0.1)
out["cn_after"] = cn(PORT)
publish(20)
out["sse_after_reload"] = sse.events(2)
print(json.dumps(out))
