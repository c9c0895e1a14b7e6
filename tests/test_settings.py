"""Process-wide settings the command applies before the heavy libraries load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_mimalloc_returns_memory_promptly_unless_the_operator_said_otherwise() -> None:
    """The command asks mimalloc to give freed pages back at once (a lower peak per run);
    an operator's own setting is kept."""
    from exchange.settings import release_memory_promptly

    environ: dict[str, str] = {}
    release_memory_promptly(environ)
    assert environ == {"MIMALLOC_PURGE_DELAY": "0", "MIMALLOC_ALLOW_THP": "0"}
    chosen = {"MIMALLOC_PURGE_DELAY": "250", "MIMALLOC_ALLOW_THP": "1"}
    release_memory_promptly(chosen)
    assert chosen == {"MIMALLOC_PURGE_DELAY": "250", "MIMALLOC_ALLOW_THP": "1"}


def test_the_command_sets_it_before_pyarrow_loads(tmp_path: Path) -> None:
    """Read by mimalloc when pyarrow loads: the command must set it first."""
    script = (
        "import os, sys\n"
        "from exchange.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(os.environ.get('MIMALLOC_PURGE_DELAY'), 'pyarrow' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MIMALLOC_PURGE_DELAY"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 False"


FREED_BLOCKS = """
import ctypes, sys
from exchange.settings import return_freed_blocks
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "set":
    assert return_freed_blocks({})
def resident():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) >> 10
first = libc.malloc(8 << 20)  # freed, it raises glibc's own threshold to 8 MiB
ctypes.memset(first, 1, 8 << 20)
libc.free(first)
blocks, pins = [], []
for _ in range(16):
    blocks.append(libc.malloc(2 << 20))
    ctypes.memset(blocks[-1], 1, 2 << 20)
    pins.append(libc.malloc(128 << 10))  # keeps each freed block from the heap's top
before = resident()
for block in blocks:
    libc.free(block)
print(before - resident())
"""


def test_freed_blocks_of_a_few_mib_go_back_to_the_system() -> None:
    """With the thresholds set, 2 MiB blocks freed between live ones are returned at once;
    glibc on its own keeps them once a larger block was freed before."""
    returned = {}
    for mode in ("set", "default"):
        done = subprocess.run(
            [sys.executable, "-c", FREED_BLOCKS, mode], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        returned[mode] = int(done.stdout)
    assert returned["set"] >= 30
    assert returned["default"] <= 2


def test_an_operators_own_malloc_tuning_is_left_alone() -> None:
    from exchange.settings import return_freed_blocks

    assert not return_freed_blocks({"MALLOC_ARENA_MAX": "2"})
    assert not return_freed_blocks({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})
