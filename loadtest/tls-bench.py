#!/usr/bin/env python3
"""New TLS connections per server CPU-second (issue 15's HTTPS measurement).

usage: loadtest/tls-bench.py [CONNECTIONS=2000] [PARALLEL=50] [KEY=ec|rsa]

Makes a throwaway CA and a server certificate (ECDSA P-256 or RSA 2048) with openssl, starts
the release binary with HTTPS on, then opens CONNECTIONS new TLS connections, PARALLEL at a
time, each doing one `GET /_rig/health` before it closes (full handshakes: no session
resumption). Meanwhile a plain-HTTP client measures the health latency on the same shards, to
show whether handshakes stall them. Prints the server CPU (utime+stime from /proc) per new
TLS connection, and the plain requests' p50/p99 during the storm. Bounded: 120 s. Loopback.
"""
import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, cpu_ms, free_port


def pki(d, kind):
    run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=bench-ca")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" else ["-newkey", "rsa:2048"]
    run("req", *key, "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=bench")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "san.ext")


async def one_tls(port, ctx):
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    w.write(b"GET /_rig/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    await w.drain()
    data = await r.read()
    w.close()
    return data.startswith(b"HTTP/1.1 200")


PROBER = r"""
import json, socket, sys, time
port, until = int(sys.argv[1]), float(sys.argv[2])
lat = []
while time.time() < until:
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /_rig/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    while s.recv(4096):
        pass
    s.close()
    lat.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.01)
print(json.dumps(lat))
"""


def prober(port, seconds):
    """Plain health requests from a process of its own (the TLS clients' event loop would
    otherwise be what it measures)."""
    return subprocess.Popen([sys.executable, "-c", PROBER, str(port), str(time.time() + seconds)],
                            stdout=subprocess.PIPE, text=True)


def percentiles(proc):
    lat = sorted(json.loads(proc.communicate()[0]))
    pct = lambda p: round(lat[min(len(lat) - 1, int(len(lat) * p))], 2) if lat else None
    return [pct(0.5), pct(0.99)]


async def main(n, parallel, kind):
    d = tempfile.mkdtemp(prefix="cb-tls-bench-")
    pki(d, kind)
    inbound, api, tls_in, tls_api = free_port(), free_port(), free_port(), free_port()
    env = dict(os.environ, INBOUND_PORT=str(inbound), API_HTTP_PORT=str(api), CB_INBOUND_BIND="127.0.0.1",
               INBOUND_HTTPS_PORT=str(tls_in), API_HTTPS_PORT=str(tls_api),
               HTTPS_CERTFILE=os.path.join(d, "server.pem"), HTTPS_KEYFILE=os.path.join(d, "server.key"),
               MAX_CONNECTIONS_PER_MINUTE="1000000", LOG_LEVEL="warn")
    tuning = os.path.join(d, "tuning.toml")
    with open(tuning, "w") as f:
        f.write("[runtime]\n")
    srv = subprocess.Popen([BIN, "--tuning", tuning], env=env)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", tls_in), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.pem"))
        # No session tickets reused: every connection is a full handshake.
        ctx.options |= ssl.OP_NO_TICKET
        before = percentiles(prober(inbound, 1.0))
        sem = asyncio.Semaphore(parallel)

        async def guarded():
            async with sem:
                return await one_tls(tls_in, ctx)

        during = prober(inbound, 1.5)
        cpu0, t0 = cpu_ms(srv.pid), time.time()
        ok = await asyncio.wait_for(asyncio.gather(*[guarded() for _ in range(n)]), 120)
        t1, cpu1 = time.time(), cpu_ms(srv.pid)
        during = percentiles(during)
        cpu = cpu1 - cpu0
        print(json.dumps({
            "key": kind, "connections": n, "parallel": parallel, "ok": sum(ok),
            "server_cpu_ms": round(cpu, 1),
            "server_cpu_us_per_tls_connection": round(cpu * 1000 / n, 1),
            "tls_connections_per_server_cpu_second": round(n / (cpu / 1000)) if cpu else None,
            "wall_s": round(t1 - t0, 2),
            "plain_health_ms_p50_p99_during_first_1_5_s": during,
            "plain_health_ms_p50_p99_before": before,
        }, indent=1))
        return 0 if sum(ok) == n else 1
    finally:
        srv.terminate()
        srv.wait(10)
        subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    a = sys.argv[1:]
    sys.exit(asyncio.run(main(int(a[0]) if a else 2000, int(a[1]) if len(a) > 1 else 50,
                              a[2] if len(a) > 2 else "ec")))
