"""What `partner expire` deletes in a recorded drop folder, on real folders: only a folder
whose manifest is the one received, the manifest last, and never through a link or a pipe."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from exchange import destruction
from exchange.manifest import MANIFEST_NAME, SIGNATURE_NAME, SSH_SIGNATURE_NAME

PAYLOAD = "data.csv.age"
DROP_NAMES = (PAYLOAD, SIGNATURE_NAME, SSH_SIGNATURE_NAME)


def drop_folder(root: Path) -> tuple[Path, dict[str, Any]]:
    """A drop folder as received, and the facts `receive` recorded of it."""
    folder = root / "drop"
    folder.mkdir()
    document = b'{"drop_id": "d"}\n'
    (folder / MANIFEST_NAME).write_bytes(document)
    for name in DROP_NAMES:
        (folder / name).write_bytes(b"drop's " + name.encode())
    return folder, {"payload": PAYLOAD, "manifest_sha256": hashlib.sha256(document).hexdigest()}


def contents(folder: Path) -> dict[str, bytes | str]:
    return {
        p.name: ("-> " + os.readlink(p)) if p.is_symlink() else p.read_bytes()
        for p in folder.iterdir()
        if p.is_symlink() or p.is_file()
    }


def test_the_drop_is_deleted_manifest_last_and_its_folder_removed(tmp_path: Path) -> None:
    folder, facts = drop_folder(tmp_path)
    done = destruction._delete_drop(folder, facts)
    assert [(d["name"], d["status"]) for d in done] == [
        *((n, "deleted") for n in DROP_NAMES),
        (MANIFEST_NAME, "deleted"),
    ]
    assert not folder.exists()
    # Again (a run that stopped before saving the record): nothing there, nothing refused.
    assert [d["status"] for d in destruction._delete_drop(folder, facts)] == ["absent"]


def test_a_folder_with_no_manifest_keeps_every_file(tmp_path: Path) -> None:
    folder, facts = drop_folder(tmp_path)
    (folder / MANIFEST_NAME).unlink()
    before = contents(folder)
    done = destruction._delete_drop(folder, facts)
    assert [d["status"] for d in done] == ["refused: no manifest"]
    assert contents(folder) == before


def test_a_manifest_reached_through_a_link_is_not_the_drops(tmp_path: Path) -> None:
    """Before, a linked manifest read as none, and the other files were deleted."""
    folder, facts = drop_folder(tmp_path)
    real = tmp_path / "real-manifest.json"
    (folder / MANIFEST_NAME).rename(real)
    (folder / MANIFEST_NAME).symlink_to(real)  # the very bytes received, through a link
    before = contents(folder)
    done = destruction._delete_drop(folder, facts)
    assert [d["status"] for d in done] == ["refused: manifest unreadable"]
    assert contents(folder) == before and real.is_file()


def test_a_manifest_that_is_a_pipe_is_refused_without_waiting(tmp_path: Path) -> None:
    """Opening a pipe nobody writes to would block `expire` for ever."""
    folder, facts = drop_folder(tmp_path)
    (folder / MANIFEST_NAME).unlink()
    os.mkfifo(folder / MANIFEST_NAME)
    before = contents(folder)
    done: list[list[dict[str, str]]] = []
    worker = threading.Thread(
        target=lambda: done.append(destruction._delete_drop(folder, facts)), daemon=True
    )
    worker.start()
    worker.join(10)
    assert done, "expire blocked on a pipe named like the manifest"
    assert [d["status"] for d in done[0]] == ["refused: manifest unreadable"]
    assert contents(folder) == before


def test_another_drops_manifest_keeps_every_file(tmp_path: Path) -> None:
    folder, facts = drop_folder(tmp_path)
    before = contents(folder)
    done = destruction._delete_drop(folder, {**facts, "manifest_sha256": "0" * 64})
    assert [d["status"] for d in done] == ["refused: another drop"]
    assert contents(folder) == before


def test_a_drop_folder_reached_through_a_link_is_refused_not_called_absent(
    tmp_path: Path,
) -> None:
    """Before, a recorded folder that was a link (or a file) read as "absent": the receipt said
    the drop's files were gone while they were still there, and nobody was warned."""
    folder, facts = drop_folder(tmp_path)
    link = tmp_path / "link-to-drop"
    link.symlink_to(folder)
    before = contents(folder)
    assert [d["status"] for d in destruction._delete_drop(link, facts)] == ["refused: not a folder"]
    assert contents(folder) == before
    data = {"what": "plaintext", "name": "d.csv", "status": "deleted"}
    warning = destruction._warning("d", [data, *destruction._delete_drop(link, facts)])
    assert warning is not None and (
        "the drop folder its record names is a link or not a folder, so nothing there was "
        "deleted" in warning
    )
    (tmp_path / "a-file").write_text("not a folder")
    assert [d["status"] for d in destruction._delete_drop(tmp_path / "a-file", facts)] == [
        "refused: not a folder"
    ]
