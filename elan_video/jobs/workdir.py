"""The work folder of a segmented job: finished segments and a manifest, kept beside the output so that a job that
crashed, was killed or interrupted resumes where it stopped.

``.OUT.elan-work/`` (hidden, named after the output file ``OUT``) holds ``manifest.json`` and one
``segment-NNNNN.elanseg`` per finished segment (:mod:`~elan_video.jobs.segment_file`). The manifest records what
the segments were made from, as a key: the source's fingerprint (size and hashes of its first and last MiB, not its
path or date, so a copied or renamed source still resumes), the network's weights hash, and every option that
changes the output (scale, precision and backend as "auto" settled them, tiling, the encoder plan, time range,
deinterlacing, outscale, segment length; a cluster's workers settle "auto" each on its own machine, so there it
stays "auto"). Options that change only how the job runs (workers, Ray, progress, JSON) are not in it. A key
that differs starts the job over with a warning naming what changed; a job left to "auto" takes the backend and
precision of the finished segments of the same source and model (:func:`earlier_choice`) where it could choose
them here, rather than measuring again.

Files are written under a temporary name and renamed once complete, and the manifest is rewritten the same way
after each segment, so a kill at any instant leaves a folder that the next run reads correctly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import OutputError
from .segment_file import read_segment_file

__all__ = ["WorkFolder", "earlier_choice", "model_hash", "source_fingerprint", "work_folder_for"]

_MANIFEST = "manifest.json"
_VERSION = 1
_EDGE = 1 << 20  # bytes hashed at each end of the source


def work_folder_for(destination: Path) -> Path:
    """Where the segments of the job writing ``destination`` are kept: ``.NAME.elan-work`` beside it."""
    return destination.with_name(f".{destination.name}.elan-work")


def source_fingerprint(path: Path) -> dict[str, Any]:
    """What identifies a source file's content cheaply, whatever its size: its size and the SHA-256 of its first
    and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(_EDGE))
        if size > _EDGE:
            f.seek(max(_EDGE, size - _EDGE))
            digest.update(f.read(_EDGE))
    return {"size": size, "sha256_ends": digest.hexdigest()}


def model_hash(state: dict[str, Any]) -> str:
    """SHA-256 of a network's state dict (names, dtypes, shapes and values of its tensors)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())  # the bits, whatever the dtype (bf16)
    return digest.hexdigest()


def earlier_choice(destination: Path, *, source: dict[str, Any], model: str) -> tuple[str, str] | None:
    """The (backend, precision) the finished segments of an unfinished job writing ``destination`` were made with,
    where that job read the same ``source`` (:func:`source_fingerprint`) with the same ``model``
    (:func:`model_hash`); None where there is no such job or it has no finished segment."""
    path = work_folder_for(destination)
    manifest = _read_manifest(path) if path.is_dir() else None
    if not manifest or not manifest.get("segments"):
        return None
    key = manifest.get("key")
    if not isinstance(key, dict) or key.get("source") != source or key.get("model") != model:
        return None
    options = key.get("options")
    if not isinstance(options, dict):
        return None
    backend, precision = options.get("backend"), options.get("precision")
    return (backend, precision) if isinstance(backend, str) and isinstance(precision, str) else None


class WorkFolder:
    """The work folder of one job: which segments are finished (index -> frames), and where their files go.

    Opened with :meth:`open`, which resumes or starts over; :meth:`segment_writer` gives a segment's file to
    write and records it when complete; :meth:`remove` deletes the folder once the output is in place.
    """

    def __init__(self, path: Path, key: dict[str, Any], done: dict[int, int]) -> None:
        self.path = path
        self.key = key
        self.done = done

    @classmethod
    def open(
        cls, destination: Path, key: dict[str, Any], *, resume: bool, total: int, warn: Callable[[str], None]
    ) -> WorkFolder:
        """The work folder for ``destination``: the finished segments of an earlier run with the same ``key``
        (each checked: its file complete, decodable, with the frames recorded) when ``resume``, else empty (an
        earlier run's folder cleared; with a warning when its key differs)."""
        path = work_folder_for(destination)
        key = json.loads(json.dumps(key))  # as the manifest gives it back (tuples as lists)
        done: dict[int, int] = {}
        if path.is_dir():
            previous = _read_manifest(path)
            if resume and previous is not None and previous.get("key") == key:
                for entry in previous.get("segments", []):
                    index, frames = int(entry["index"]), int(entry["frames"])
                    segment = read_segment_file(path / segment_name(index))
                    if index < total and segment is not None and segment.frames == frames and segment.decodes():
                        done[index] = frames
            elif resume and previous is not None:
                changed = ", ".join(_changes(previous.get("key", {}), key)) or "the job"
                warn(f"{destination}: the unfinished job in {path.name} was made with another {changed}; starting over")
            if done:
                _clear_others(path, done)
            else:
                shutil.rmtree(path, ignore_errors=True)
        folder = cls(path, key, done)
        try:
            try:
                path.mkdir(exist_ok=True)
            except OSError as exc:
                raise OutputError(f"{path}: cannot be created ({exc.strerror or exc})") from None
            folder._save()
        except BaseException:  # Ctrl-C or SIGTERM here too: leave no folder without finished segments
            if not done:
                folder.remove()
            raise
        return folder

    def segment_path(self, index: int) -> Path:
        return self.path / segment_name(index)

    @contextlib.contextmanager
    def segment_writer(self, index: int) -> Iterator[IO[bytes]]:
        """A file to write segment ``index`` into; in place (and :meth:`record` may follow) only once the body
        completes, removed on any error."""
        final = self.segment_path(index)
        partial = final.with_suffix(".partial")
        try:
            with partial.open("wb") as f:
                yield f
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def record(self, index: int, frames: int) -> None:
        """Segment ``index`` is finished with ``frames`` frames (its file in place)."""
        self.done[index] = frames
        self._save()

    def remove(self) -> None:
        # An interrupted job's encoder thread may still be closing its segment file while this runs, which can
        # leave the folder in place; try again briefly.
        for _ in range(3):
            shutil.rmtree(self.path, ignore_errors=True)
            if not self.path.exists():
                return
            time.sleep(0.05)

    def _save(self) -> None:
        manifest = {
            "version": _VERSION,
            "key": self.key,
            "segments": [{"index": i, "frames": n, "file": segment_name(i)} for i, n in sorted(self.done.items())],
        }
        partial = self.path / (_MANIFEST + ".partial")
        partial.write_text(json.dumps(manifest, indent=1))
        os.replace(partial, self.path / _MANIFEST)


def segment_name(index: int) -> str:
    return f"segment-{index:05d}.elanseg"


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((path / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("version") == _VERSION else None


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The names of the parts of a key that differ ("source", "model", "crf", ...)."""
    names = []
    for part in sorted(set(old) | set(new)):
        a, b = old.get(part), new.get(part)
        if isinstance(a, dict) and isinstance(b, dict) and part == "options":
            names += [name for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)]
        elif a != b:
            names.append(part)
    return names


def _clear_others(path: Path, keep: dict[int, int]) -> None:
    """Remove everything in the folder but the segment files of ``keep`` (partial files of a killed run)."""
    names = {segment_name(i) for i in keep}
    for item in path.iterdir():
        if item.name not in names and item.name != _MANIFEST:
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
