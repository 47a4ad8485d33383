"""What a health probe costs an MCP server: a session per probe against one session kept open.

Starts three copies of one installed MCP service (mcp-proxy bridging its stdio server, from the
host's install cache) on free 127.0.0.1 ports and, over the same --seconds, leaves the first alone,
probes the second every --every seconds with `probe_mcp` (initialize, notifications/initialized,
tools/list, DELETE: what `meshspec verify` runs) and the third with a `KeptSession` (one tools/list
on a kept session: what the checker runs). Prints each copy's CPU (its process tree's scheduler
runtime, from /proc/<pid>/task/*/schedstat) side by side, and what a probe adds per interval.
A benchmark, not a test: exit 0 whenever it measured; 2 when it could not (no install to run).

    .venv/bin/python bench/mcp_probe_cost.py --service sequentialthinking --seconds 90
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

from meshspec import settings
from meshspec.runtime.probes.mcp import KeptSession, probe_mcp

STARTUP_SECONDS = 30.0
PROGRESS_EVERY = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def runtime_ns(pid: int) -> int:
    """Scheduler runtime of `pid` and its children (every thread), in ns."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total = 0
    for proc in [pid, *map(int, children)]:
        for task in Path(f"/proc/{proc}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    return total


def install_of(service: str) -> Path:
    found = sorted(Path(settings.cache_dir()).glob(f"{service}-*/venv/bin/mcp-proxy"))
    if not found:
        raise SystemExit(f"no installed {service} under {settings.cache_dir()} (run `make deploy` first)")
    return found[-1].parents[2]


def stdio_command(install: Path) -> list[str]:
    """The stdio server mcp-proxy bridges: the install's only bin in node_modules, or its venv's server."""
    bins = sorted((install / "node_modules" / ".bin").glob("mcp-server-*"))
    if not bins:
        raise SystemExit(f"{install}: no node_modules/.bin/mcp-server-* to bridge")
    return [str(bins[0])]


def start(install: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen([str(install / "venv/bin/mcp-proxy"), "--host", "127.0.0.1", "--port", str(port), "--",
                             *stdio_command(install)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if probe_mcp(url, timeout=2).ok:
            return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not complete an MCP handshake within {STARTUP_SECONDS:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", default="sequentialthinking", help="an installed stdio MCP service")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--every", type=float, default=10.0, help="probe interval (the mesh's: 10 s)")
    args = parser.parse_args()
    try:
        install = install_of(args.service)
        stdio_command(install)
    except SystemExit as err:
        print(err, file=sys.stderr)
        return 2
    ports = {name: free_port() for name in ("not probed", "session per probe", "kept session")}
    procs = {name: start(install, port) for name, port in ports.items()}
    url = {name: f"http://127.0.0.1:{port}/mcp" for name, port in ports.items()}
    kept = KeptSession(url["kept session"])
    try:
        for name in procs:
            wait_ready(url[name])
        time.sleep(2.0)  # the readiness probes' connections close
        before = {name: runtime_ns(p.pid) for name, p in procs.items()}
        started = last_line = time.monotonic()
        probes = 0
        while (now := time.monotonic()) - started < args.seconds:
            one, other = probe_mcp(url["session per probe"]), kept.probe()
            if not (one.ok and other.ok):
                print(f"a probe failed: {one.reason} / {other.reason}", file=sys.stderr)
                return 2
            probes += 1
            if now - last_line >= PROGRESS_EVERY:
                print(f"  {now - started:5.1f}/{args.seconds:.0f} s, {probes} probes each", flush=True)
                last_line = now
            time.sleep(max(0.0, args.every - (time.monotonic() - now)))
        seconds = time.monotonic() - started
        cores = {name: (runtime_ns(p.pid) - before[name]) / 1e9 / seconds for name, p in procs.items()}
    finally:
        kept.close()
        for proc in procs.values():
            proc.terminate()
            proc.wait(10)
    idle = cores["not probed"]
    print(f"{args.service} (mcp-proxy + its stdio server), {probes} probes every {args.every:g} s over {seconds:.0f} s:")
    for name, value in cores.items():
        added = (value - idle) * args.every * 1000
        extra = "" if name == "not probed" else f"   +{added:5.2f} ms of CPU per probe"
        print(f"  {name:18s} {value:.4f} core ({value / idle:4.2f}x not probed){extra}")
    per_probe = (cores["session per probe"] - idle) / max(cores["kept session"] - idle, 1e-9)
    print(f"  a kept session's probe costs the server 1/{per_probe:.1f} of a session per probe")
    return 0


if __name__ == "__main__":
    sys.exit(main())
