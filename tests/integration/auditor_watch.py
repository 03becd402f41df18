"""A `featurestream auditor` beside a long test's workers, and what it concluded: the "no false alarms" proof
of issue 20. It runs with --no-heal, so the test's own ground-truth checks get no help from it."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from featurestream.config import Config
from featurestream.stack.ports import free_port
from tests.integration.procs import Proc
from tests.support.wait import wait_for

STORES = ("online", "offline")


@dataclass(frozen=True)
class Parity:
    """The auditor's counters for one group: per store, ids/offsets checked, in flight, real mismatches."""

    checked: dict[str, float]
    in_flight: dict[str, float]
    mismatches: dict[str, float]
    audits: dict[str, float]

    def line(self) -> str:
        return ", ".join(f"{s}: checked {self.checked[s]:,.0f}, in flight {self.in_flight[s]:,.0f}, "
                         f"mismatches {self.mismatches[s]:,.0f}" for s in STORES) + f"; audits {self.audits}"


class AuditorWatch:
    def __init__(self, cfg: Config, log: Path, *, interval_s: float = 5.0) -> None:
        self.port = free_port()
        self.proc = Proc(cfg, ["auditor", "--interval-s", str(interval_s), "--sample", "100", "--rows", "10",
                               "--no-heal", "--metrics-port", str(self.port), "--log-level", "warning"], log)

    def parity(self, group: str) -> Parity:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.proc.metrics_port()}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

        def per_store(name: str) -> dict[str, float]:
            return {st: sum(s.value for s in samples if s.name == name and s.labels.get("group") == group
                            and s.labels.get("store") == st) for st in STORES}

        audits = {s.labels["outcome"]: s.value for s in samples if s.name == "featurestream_parity_audits_total"}
        return Parity(per_store("featurestream_parity_checked_total"), per_store("featurestream_parity_in_flight_total"),
                      per_store("featurestream_parity_mismatch_total"), audits)

    def final(self, group: str, *, timeout_s: float = 180) -> Parity:
        """The counters once two more passes judged both stores after the test's pipeline settled."""
        start = self.parity(group)
        ok_before = start.audits.get("ok", 0) + start.audits.get("mismatch", 0)
        return wait_for(lambda: (p := self.parity(group)).audits.get("ok", 0) + p.audits.get("mismatch", 0)
                        >= ok_before + 2 and all(p.checked[s] > start.checked[s] for s in STORES) and p,
                        timeout_s=timeout_s, interval_s=1, what=f"two more audit passes\n{self.proc.tail()}")

    def stop(self) -> None:
        self.proc.stop()
