"""A load generator in C for bench/http_api.py: wrk (Debian's package), replaying requests signed ahead.

The Python load generator shares the machine's 2 cores with the server it measures and spends about
as much CPU per request as the server does, so its figures are the client's as much as the server's.
wrk sends the same signed requests from C: SigV4 signatures stay valid for 15 minutes, so the requests
of a level are built and signed just before it, written into a Lua script as raw HTTP, and replayed in
turn on ``clients`` keep-alive connections from one wrk thread. The server still verifies every
signature. A response other than 200, or a GetRecord answer without a record, counts as an error.

``make bench-setup`` installs wrk where apt-get can (root on Debian); without it the benchmark prints
that and measures with the Python generator only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# wrk's Lua states are one per thread; done() sums the threads' counts (the usual wrk pattern).
_SCRIPT = """
local requests = {%(requests)s}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) n = 0; bad = 0 end
function request()
  n = n %% #requests + 1
  return requests[n]
end
function response(status, headers, body)
  if status ~= 200 or (%(need_record)s and not string.find(body, '"Record"', 1, true)) then bad = bad + 1 end
end
function done(summary, latency, reqs)
  local errors = 0
  for _, t in ipairs(threads) do errors = errors + t:get("bad") end
  io.write(string.format("FS_RESULT %%d %%d %%.6f %%.3f %%.3f\\n", summary.requests, errors,
                         summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        """Answered requests per second that were right (errors excluded)."""
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def row(self, op: str, clients: int) -> str:
        return (f"{op:<10} {'wrk':<5} {clients:>7} {self.rate:>10.0f} {self.p50_ms:>8.2f} {self.p99_ms:>8.2f} "
                f"{self.requests - self.errors:>8} {self.errors:>6}")


def wrk_path() -> str | None:
    return shutil.which("wrk")


def lua_string(raw: bytes) -> str:
    """``raw`` as a Lua string literal, byte for byte (a long bracket would turn CR LF into LF)."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in raw) + '"'


def raw_request(method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> bytes:
    head = f"{method} {path}{'?' + query if query else ''} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def run_wrk(url: str, requests: list[bytes], *, clients: int, seconds: float, need_record: bool) -> WrkResult:
    """Replay ``requests`` (raw, signed) against ``url`` for ``seconds`` on ``clients`` connections."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed (make bench-setup installs it with apt-get)")
    script = _SCRIPT % {"requests": ",\n".join(lua_string(r) for r in requests),
                        "need_record": "true" if need_record else "false"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.lua"
        path.write_text(script)
        out = subprocess.run([wrk, "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(path), url],
                             capture_output=True, text=True, timeout=seconds + 60)
    found = re.search(r"^FS_RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+)$", out.stdout, re.M)
    if out.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed (rc {out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out.stdout)
    extra = sum(int(x) for x in socket_errors.groups()) if socket_errors else 0
    total, errors, secs, p50, p99 = found.groups()
    return WrkResult(int(total), int(errors) + extra, float(secs), float(p50), float(p99))
