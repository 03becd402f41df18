"""Errors of the local stack launcher: each says what failed, where, and what to do."""

from __future__ import annotations

from schemas.errors import FeatureStoreError, ServiceUnavailableError


class StackError(FeatureStoreError):
    """The local stack could not be started, inspected or stopped."""


class ToolMissingError(StackError):
    """A program the stack needs (java, mvn, go, a server binary) is not installed."""


class PortInUseError(StackError):
    """A port the stack wants to listen on is taken by a process that is not ours."""

    def __init__(self, service: str, port: int, owner: str | None) -> None:
        who = f"by {owner}" if owner else "by another process (owner not visible to this user)"
        super().__init__(
            f"{service}: port 127.0.0.1:{port} is already in use {who}. Stop it, or pick another "
            f"port with `featurestream up --{service}-port N`."
        )
        self.service = service
        self.port = port
        self.owner = owner


class ServerStartError(StackError, ServiceUnavailableError):
    """A server exited during start-up or did not answer before its deadline."""

    def __init__(self, service: str, reason: str, log_path: object, log_tail: str) -> None:
        super().__init__(
            f"{service}: {reason}. Last lines of {log_path}:\n{log_tail or '(log is empty)'}"
        )
        self.service = service
        self.log_path = log_path
