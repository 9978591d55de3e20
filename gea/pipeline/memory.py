"""Peak resident memory of a process tree, sampled in a background thread."""

from __future__ import annotations

import threading
from typing import Optional

import psutil


def tree_rss_bytes(root: psutil.Process) -> int:
    """Sum the resident memory of `root` and all its descendants (Ray workers, simulators).

    Each process counts its proportional set size (PSS): pages shared between processes,
    such as Chromium's or Ray's shared libraries and object store, are split among them
    instead of counted once per process as plain RSS would. RSS is the fallback where
    PSS cannot be read.
    """
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            try:
                total += process.memory_full_info().pss
            except (psutil.AccessDenied, AttributeError):
                total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return total


class PeakMemoryMonitor:
    """Record the peak of `tree_rss_bytes` for this process every `interval` seconds.

    Sampling misses peaks shorter than `interval`, so the reported peak is a lower bound.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._root = psutil.Process()

    def __enter__(self) -> "PeakMemoryMonitor":
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(self._root))
            self._stop.wait(self.interval)

    def reset_peak(self) -> int:
        """Return the peak so far and start a new one (for per-stage peaks)."""
        peak, self.peak_bytes = self.peak_bytes, tree_rss_bytes(self._root)
        return max(peak, self.peak_bytes)
