"""Helpers shared by the Python benchmarks in loadtest/ (imported from the script's folder)."""
import asyncio
import json
import os
import socket
import time
import urllib.parse
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "..", "target", "release", "corebridge")


def cpu_ms(pid):
    """utime + stime of a process, in ms (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def metric(api, prefix):
    """The sum of the /metrics lines starting with `prefix`."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{api}/metrics", timeout=5).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(prefix))


async def open_sse(port, src, event_type, last_id=None):
    """An SSE stream of `event_type` from 127.0.0.1:`port`, bound to source address `src`,
    resuming after `last_id` if given: (reader, writer). Raises OSError when it cannot connect."""
    subs = urllib.parse.quote(json.dumps([{"eventType": event_type}]))
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
    head = f"GET /_rig/v1/connection/sse?subscriptions={subs} HTTP/1.1\r\nhost: x\r\n"
    if last_id:
        head += f"last-event-id: {last_id}\r\n"
    w.write((head + "\r\n").encode())
    return r, w


async def sse_lines(reader, deadline):
    """The lines of whole SSE events from `reader` (an event ends with a blank line) until the
    stream ends or the wall clock passes `deadline`; the caller tells which by the clock.
    Connection errors propagate."""
    buf = b""
    while True:
        left = deadline - time.time()
        if left <= 0:
            return
        try:
            chunk = await asyncio.wait_for(reader.read(65536), timeout=left)
        except asyncio.TimeoutError:
            return
        if not chunk:
            return
        buf += chunk
        end = buf.rfind(b"\n\n")
        if end < 0:
            continue
        block, buf = buf[: end + 2], buf[end + 2:]
        for line in block.split(b"\n"):
            yield line
