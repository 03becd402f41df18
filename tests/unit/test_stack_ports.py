"""Port checks: free or taken, who holds it, and the stack's port settings."""

from __future__ import annotations

import os
import socket

import pytest

from featurestream.stack.errors import PortInUseError
from featurestream.stack.layout import StackPorts
from featurestream.stack.ports import free_port, parse_listeners, port_is_free, port_owner
from featurestream.stack.s3_server import bucket_of


def test_a_listening_socket_makes_the_port_taken_and_names_its_owner() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free(port)
        owner = port_owner(port)
        assert owner is not None and owner.startswith(f"pid {os.getpid()} ")
    assert port_is_free(port)
    assert port_owner(port) is None


def test_free_port_is_free() -> None:
    port = free_port()
    assert 0 < port < 65536 and port_is_free(port)


@pytest.mark.parametrize("port", [0, 65536, -5, "19092", 1.5, None, True])
def test_port_is_free_rejects_non_ports(port: object) -> None:
    with pytest.raises(ValueError, match="1..65535"):
        port_is_free(port)  # type: ignore[arg-type]


def test_parse_listeners_reads_only_listening_rows_of_that_port() -> None:
    rows = [
        "   0: 0100007F:4A94 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1",
        "   1: 0100007F:4A94 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 222 1",
        "   2: 0100007F:4A95 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1",
        "garbage line",
        "",
    ]
    assert parse_listeners(rows, 0x4A94) == {"111"}
    assert parse_listeners(rows, 1) == set()


def test_port_in_use_error_names_service_port_owner_and_the_fix() -> None:
    msg = str(PortInUseError("redis", 16379, "pid 42 (redis-server *:16379)"))
    assert "16379" in msg and "pid 42" in msg and "--redis-port" in msg
    assert "owner not visible" in str(PortInUseError("kafka", 19092, None))


def test_stack_ports_defaults_are_not_the_products_defaults() -> None:
    ports = StackPorts()
    assert {ports.kafka, ports.controller, ports.redis, ports.s3}.isdisjoint({9092, 9093, 6379, 9000})


@pytest.mark.parametrize("kwargs, match", [
    ({"kafka": 0}, "--kafka-port"), ({"redis": 70000}, "--redis-port"), ({"s3": "19000"}, "--s3-port"),
    ({"controller": None}, "--controller-port"), ({"kafka": 1, "redis": 1}, "must all differ"),
])
def test_stack_ports_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StackPorts(**kwargs)


@pytest.mark.parametrize("uri, bucket", [("s3://featurestream/offline", "featurestream"), ("s3://b", "b")])
def test_bucket_of(uri: str, bucket: str) -> None:
    assert bucket_of(uri) == bucket


@pytest.mark.parametrize("uri", ["", "s3://", "s3:///x", "/local/path", "gs://b/p"])
def test_bucket_of_rejects_non_s3_uris(uri: str) -> None:
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        bucket_of(uri)


def test_port_owner_skips_fds_that_vanish_and_still_finds_the_listener(tmp_path) -> None:
    # A process's fd that closes between the listing and the readlink (a regular file here,
    # which readlink refuses the same way) must not hide the listening socket after it.
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
    row = "   0: 0100007F:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777001"
    (proc / "net" / "tcp").write_text(f"{header}\n{row}\n")
    fd_dir = proc / "4242" / "fd"
    fd_dir.mkdir(parents=True)
    for n in range(40):
        (fd_dir / str(n)).write_text("")  # readlink raises OSError(EINVAL) on these
    (fd_dir / "99").symlink_to("socket:[777001]")
    (proc / "4242" / "cmdline").write_bytes(b"kafka\0server\0")
    (proc / "self").mkdir()  # non-numeric entries are skipped
    assert port_owner(0x4E20, proc=proc) == "pid 4242 (kafka server)"
    assert port_owner(0x4E21, proc=proc) is None
