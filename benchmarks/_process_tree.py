"""Peak memory of a process and its descendants, sampled from /proc while they run.

wait4 gives only the largest single process of a tree. A run can have a helper (the
validation worker), so this samples every few tenths of a second: each process's
own peak (VmHWM, which the kernel keeps, so only growth in its last moments can be missed)
and the largest sum of the tree's resident sets at one instant (sampled, so a lower bound).
RSS counts a page shared by two processes (a library both load) in each; the tree's
proportional set size (PSS, from smaps_rollup: a shared page split between its users) is
summed too, which is the memory the tree occupies.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

# Recognised by their command lines; anything else goes by its executable's name.
ROLES = ((b"validators.worker", "validation worker"),)


@dataclass
class TreePeaks:
    """Peak RSS in MB per role (the root is "main"), and of the tree at one instant."""

    by_role: dict[str, float] = field(default_factory=dict)
    tree_mb: float = 0.0
    tree_pss_mb: float = 0.0  # the largest sum of the tree's PSS at one instant

    @property
    def sum_of_peaks(self) -> float:
        """Each process's own peak, added: an upper bound of the tree at any instant."""
        return sum(self.by_role.values())


class TreeWatch:
    """Samples the process tree under `root` in a thread until stopped."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        self.root = root
        self.interval = interval
        self.peaks = TreePeaks()
        self._peak_by_pid: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        roles: dict[str, float] = {}
        for role, mb in self._peak_by_pid.values():
            roles[role] = max(roles.get(role, 0.0), mb)
        self.peaks.by_role = roles

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        total = proportional = 0.0
        for pid in _tree(self.root):
            status = _status(pid)
            if status is None:
                continue
            hwm, rss = status
            total += rss
            proportional += _pss(pid)
            role = "main" if pid == self.root else _role(pid)
            _, before = self._peak_by_pid.get(pid, (role, 0.0))
            self._peak_by_pid[pid] = (role, max(before, hwm))
        self.peaks.tree_mb = max(self.peaks.tree_mb, total)
        self.peaks.tree_pss_mb = max(self.peaks.tree_pss_mb, proportional)


def _tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def _status(pid: int) -> tuple[float, float] | None:
    """(VmHWM, VmRSS) in MB, or None once the process has gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    values = {}
    for line in lines:
        if line.startswith((b"VmHWM:", b"VmRSS:")):
            key, value = line.split(b":", 1)
            values[key] = int(value.split()[0]) / 1024
    if len(values) < 2:
        return None  # a zombie has no memory left
    return values[b"VmHWM"], values[b"VmRSS"]


def _pss(pid: int) -> float:
    """The process's proportional set size in MB (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            for line in handle:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _role(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read()
    except OSError:
        return "other"
    for marker, role in ROLES:
        if marker in command:
            return role
    return os.path.basename(command.split(b"\0", 1)[0]).decode(errors="replace") or "other"
