"""The online processor's apply step in a child process of its own.

faust's per-message machinery and the apply step (decode, validate, encode, Redis round
trip) are both CPU-bound Python. In one process they share one GIL: measured, the processor
kept 0.82 of 2 cores busy and each step slowed the other. With the apply step here, faust
keeps consuming on one core while the previous batch is applied on the other. The contract
with the processor is unchanged: the call returns only once the batch is applied, so offsets
are still acknowledged after Redis has the batch.

The channel is a socket pair driven by the processor's own event loop, not a
``ProcessPoolExecutor``: the executor's feeder and management threads need the GIL that
faust keeps busy, and measured, they added 39 ms to every 1,000-record batch on its way to the
child. Frames are an 8-byte big-endian length and a pickle: batches go as plain tuples
(a tenth of the pickling cost of dataclasses), answers as ``("ok", ApplySummary)`` or
``("error", text)``.

The child builds its own registry view, Redis client and dead-letter producer from the
endpoints the parent sends as the channel's first frame (not through argv, which ``ps`` shows,
nor the environment, which no module but the front door's config reads); the parent counts each :class:`ApplySummary` into its Prometheus metrics. The
child exits when the socket closes, so a parent killed with ``kill -9`` leaves no orphan
writing to Redis. If the child dies, the batch fails and the next call starts a new child.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence

from streams.gc_tuning import settle_heap
from streams.kafka_client import KafkaTarget
from streams.online.applier import ApplySummary, make_online_applier, record_metrics
from streams.route import RawMessage

log = logging.getLogger("featurestream.online")

_HEADER = struct.Struct("!Q")


class ApplyProcessError(RuntimeError):
    """The child could not apply a batch (it answered with an error, or it died)."""


class ApplierProcess:
    """An async callable that applies a batch in the child process, one batch at a time."""

    def __init__(self, bootstrap: KafkaTarget, redis_url: str, prefix: str, *,
                 offline_uri: str | None = None) -> None:
        # The keyword arguments of make_online_applier, sent to each new child first (``bootstrap``, a
        # KafkaConnection, carries the Kafka TLS/SASL settings: the child reads no environment).
        self._settings = {"bootstrap": bootstrap, "redis_url": redis_url, "prefix": prefix,
                          "offline_uri": offline_uri}
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock: asyncio.Lock | None = None

    def _start(self) -> socket.socket:
        parent, child = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "streams.online.apply_child", str(child.fileno())],
                pass_fds=(child.fileno(),))
        finally:
            child.close()
        settings = pickle.dumps(self._settings, protocol=pickle.HIGHEST_PROTOCOL)
        parent.sendall(_HEADER.pack(len(settings)) + settings)  # a few hundred bytes: never blocks
        parent.setblocking(False)
        self._sock = parent
        log.info("apply process %d started", self._proc.pid)
        return parent

    def _stop(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the child sees end-of-file and exits
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    async def __call__(self, batch: Sequence[RawMessage]) -> ApplySummary:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            alive = self._proc is not None and self._proc.poll() is None
            sock = self._sock if alive and self._sock is not None else None
            if sock is None:
                self._stop()
                sock = self._start()
            loop = asyncio.get_running_loop()
            payload = pickle.dumps([(r.topic, r.partition, r.offset, r.key, r.value, r.headers, r.timestamp_ms)
                                    for r in batch], protocol=pickle.HIGHEST_PROTOCOL)
            try:
                await loop.sock_sendall(sock, _HEADER.pack(len(payload)) + payload)
                (size,) = _HEADER.unpack(await _recv_exactly(loop, sock, _HEADER.size))
                kind, value = pickle.loads(await _recv_exactly(loop, sock, size))
            except BaseException as exc:
                # Died, or we were cancelled halfway through an exchange: either way the
                # channel may hold half a frame, so the next call starts a fresh child.
                self._stop()
                if isinstance(exc, OSError | EOFError):
                    raise ApplyProcessError(f"the apply process died ({exc}); starting a new one") from exc
                raise
        if kind != "ok":
            raise ApplyProcessError(value)
        record_metrics(value)
        return value

    def close(self) -> None:
        self._stop()


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise EOFError("the apply process closed the channel")
        buf += chunk
    return bytes(buf)


def _recv_frame(sock: socket.socket) -> bytes | None:
    """One frame, or None at end-of-file (the processor is gone)."""
    header = sock.recv(_HEADER.size, socket.MSG_WAITALL)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = sock.recv(size, socket.MSG_WAITALL) if size else b""
    return body if len(body) == size else None


def child_main(fd: int) -> int:
    """The child's loop: read a batch, apply it, answer; exit when the processor goes away."""
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    settings = _recv_frame(sock)
    if settings is None:
        return 0
    applier = make_online_applier(**pickle.loads(settings))
    settle_heap()
    while True:
        frame = _recv_frame(sock)
        if frame is None:
            return 0
        try:
            batch = [RawMessage(*fields) for fields in pickle.loads(frame)]
            reply: tuple[str, object] = ("ok", applier.apply(batch))
        except Exception as exc:  # noqa: BLE001 - reported to the processor, which retries
            reply = ("error", f"{type(exc).__name__}: {exc}")
        payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            sock.sendall(_HEADER.pack(len(payload)) + payload)
        except OSError:
            return 0  # the processor is gone


if __name__ == "__main__":
    sys.exit(child_main(int(sys.argv[1])))
