"""The bytes of a source that a worker without the file needs to decode one segment.

A Ray worker on another machine has no access to the driver's files. What it needs of the source for one segment
are the bytes FFmpeg reads to open the file (the container's header and index) and to decode the segment from
the keyframe at or before its start to a little past its end. The driver learns which bytes those are by doing
the same reads itself: it opens the file through a recording file object with the worker's own reader
(:class:`~elan_video.media.video.reader.VideoReader`, same seek), demuxes the segment's packets without decoding
them and on past the end by :data:`_PAST_END` packets (a decoder's reordering and frame threads hold back a few
pictures), and sends the byte ranges read (:class:`SourceBytes`). The worker reads them as a file with holes
(:meth:`SourceBytes.open`); a read that falls in a hole is recorded in :attr:`SourceBytes.misses` and reads as the
end of the file, so that the worker can report the segment unfinished and the driver send it again with those
bytes added (:meth:`SourceBytes.adding`).
"""

from __future__ import annotations

import bisect
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import av
import av.error

from ..media.video.probe import VideoInfo
from ..media.video.reader import VideoReader
from .segments import Segment

__all__ = ["SourceBytes", "segment_source"]

_PAST_END = 64  # video packets demuxed after the first one at or past a segment's end
_JOIN = 1 << 16  # ranges closer than this are sent as one (FFmpeg reads in 32 KiB blocks)
_MISS_READ = 1 << 20  # bytes sent for a read that fell in a hole, from its offset on


@dataclass
class SourceBytes:
    """Some byte ranges of a source file: ``chunks`` (offset, data), sorted and disjoint; ``size`` the whole
    file's; ``name`` its file name (FFmpeg's probe weighs the extension)."""

    name: str
    size: int
    chunks: list[tuple[int, bytes]]
    misses: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) read in holes, worker side

    @property
    def nbytes(self) -> int:
        return sum(len(data) for _, data in self.chunks)

    def open(self) -> io.RawIOBase:
        """A read-only, seekable file object over the chunks; holes read as the end of the file."""
        return _HoleyFile(self)

    def adding(self, path: Path, ranges: list[tuple[int, int]]) -> SourceBytes:
        """These bytes and those of ``path`` in ``ranges`` ((offset, length); each taken from its offset on for
        at least :data:`_MISS_READ` bytes)."""
        wanted = [(a, a + len(d)) for a, d in self.chunks] + [(a, a + max(n, _MISS_READ)) for a, n in ranges]
        return _read_ranges(path, self.name, self.size, wanted)

    def __getstate__(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "chunks": self.chunks}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(**state)  # type: ignore[misc]


class _HoleyFile(io.RawIOBase):
    def __init__(self, source: SourceBytes) -> None:
        super().__init__()
        self.source = source
        self.name = source.name
        self._starts = [offset for offset, _ in source.chunks]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.source.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        pos = self._pos
        if pos >= self.source.size:
            return b""
        size = self.source.size - pos if size is None or size < 0 else size
        i = bisect.bisect_right(self._starts, pos) - 1
        if i >= 0:
            start, data = self.source.chunks[i]
            if pos < start + len(data):
                piece = data[pos - start : pos - start + size]
                self._pos += len(piece)
                return piece
        self.source.misses.append((pos, size))
        return b""

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _RecordingFile(io.RawIOBase):
    """A file read through, every read's (offset, length) kept in ``reads``."""

    def __init__(self, path: Path, reads: list[tuple[int, int]]) -> None:
        super().__init__()
        self._file = path.open("rb")
        self.name = path.name
        self.reads = reads

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        pos = self._file.tell()
        data = self._file.read(size)
        if data:
            self.reads.append((pos, pos + len(data)))
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


def segment_source(path: Path, info: VideoInfo, segment: Segment, *, deinterlace: bool | None) -> SourceBytes:
    """The bytes of ``path`` that decoding ``segment`` reads (see the module docstring)."""
    reads: list[tuple[int, int]] = []
    files: list[_RecordingFile] = []

    def opener() -> _RecordingFile:
        files.append(_RecordingFile(path, reads))
        return files[-1]

    try:
        with VideoReader(
            path, start=segment.start, end=segment.end, deinterlace=deinterlace, info=info, opener=opener
        ) as reader:
            reader.seek_to_start()
            past = 0
            try:
                for packet in reader.container.demux(reader.stream):
                    if segment.end is None or not packet.size:
                        continue
                    when = packet.pts if packet.pts is not None else packet.dts
                    if when is not None and float(when * packet.time_base) >= segment.end - 1e-9:
                        past += 1
                        if past >= _PAST_END:
                            break
            except av.error.FFmpegError:
                pass  # a damaged tail: the worker's reader stops where this one did
    finally:
        for f in files:
            f.close()
    return _read_ranges(path, path.name, path.stat().st_size, reads)


def _read_ranges(path: Path, name: str, size: int, ranges: list[tuple[int, int]]) -> SourceBytes:
    """``path``'s bytes in ``ranges`` ((start, end)), joined where they touch or nearly do."""
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        end = min(end, size)
        if merged and start <= merged[-1][1] + _JOIN:
            merged[-1][1] = max(merged[-1][1], end)
        elif start < end:
            merged.append([start, end])
    chunks = []
    with path.open("rb") as f:
        for start, end in merged:
            f.seek(start)
            chunks.append((start, f.read(end - start)))
    return SourceBytes(name=name, size=size, chunks=chunks)
