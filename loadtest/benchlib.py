"""Helpers shared by the Python benchmarks in loadtest/ (imported from the script's folder)."""
import os
import socket
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
