"""A forked `serve` worker dies with its parent, even when the parent is killed with SIGKILL.

The parent normally stops its workers (SIGTERM to each); a parent killed with ``kill -9`` cannot, and
workers left behind would go on serving on the shared socket, unsupervised, with the old settings.
On Linux the kernel sends the worker a signal when its parent dies (``prctl(PR_SET_PDEATHSIG)``);
elsewhere a daemon thread notices the worker was re-parented. Either way the worker gets SIGTERM and
stops as it would on ``featurestream serve``'s own SIGTERM.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.5


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Have ``sig`` sent to this process when ``parent_pid`` (the process that forked it) dies.

    Call first thing in the child after ``os.fork()``: a parent that died before the call is caught
    too (this process was already re-parented)."""
    if not (sys.platform.startswith("linux") and _prctl_pdeathsig(sig)):
        threading.Thread(target=_watch, args=(parent_pid, sig), name="featurestream-parent-watch",
                         daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died between fork() and here
        os.kill(os.getpid(), sig)


def _prctl_pdeathsig(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, sig: int) -> None:
    while os.getppid() == parent_pid:
        threading.Event().wait(WATCH_INTERVAL_S)
    os.kill(os.getpid(), sig)
