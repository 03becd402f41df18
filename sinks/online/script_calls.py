"""The arguments of write_if_newer.lua for some records of one group, in the order they apply.

Two builders fill it: :func:`sinks.online.store.write_script_args`, one message at a time, and
``sinks/online/column_args.py``, a batch's columns at once. The store runs it
(``OnlineStore.apply_script_calls``) and needs of each record only its key, its arguments, and for a
refusal's reason its id, op and event time (read back from the arguments).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schemas.messages import HARD_DELETE, SOFT_DELETE

# Arguments per record (documented at the top of write_if_newer.lua).
STRIDE = 10
_OP_NAMES = {"put": "put", "soft": SOFT_DELETE, "hard": HARD_DELETE}


@dataclass
class ScriptCalls:
    """Record k is ``keys[k]`` with arguments ``argv[STRIDE*k:STRIDE*(k+1)]``; ``ids[k]`` names it in reasons."""

    ids: list[str]
    keys: list[str]
    argv: list[Any]

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, record_id: str, key: str, args: Sequence[Any]) -> None:
        self.ids.append(record_id)
        self.keys.append(key)
        self.argv.extend(args)

    def extend(self, other: ScriptCalls) -> None:
        self.ids += other.ids
        self.keys += other.keys
        self.argv += other.argv

    def reorder(self, order: Sequence[int]) -> ScriptCalls:
        """The same records in the order ``order`` (positions in this one)."""
        argv: list[Any] = []
        for k in order:
            argv += self.argv[k * STRIDE:(k + 1) * STRIDE]
        return ScriptCalls([self.ids[k] for k in order], [self.keys[k] for k in order], argv)

    def select(self, chunk: Sequence[int]) -> tuple[list[str], list[Any]]:
        """(keys, flat arguments) of the records ``chunk`` (a range: sliced at C speed)."""
        if isinstance(chunk, range) and chunk.step == 1:
            return self.keys[chunk.start:chunk.stop], self.argv[chunk.start * STRIDE:chunk.stop * STRIDE]
        argv: list[Any] = []
        for k in chunk:
            argv += self.argv[k * STRIDE:(k + 1) * STRIDE]
        return [self.keys[k] for k in chunk], argv

    def op_and_event_time(self, k: int) -> tuple[str, int]:
        """Record k's op ("put", SoftDelete, HardDelete) and event time, for a refusal's reason."""
        return _OP_NAMES.get(self.argv[k * STRIDE], str(self.argv[k * STRIDE])), int(self.argv[k * STRIDE + 1])
