"""The file an encoded segment is kept in: its video packets exactly as the encoder gave them, and what decodes them.

A container would do, but each loses something a segment must keep: Matroska rounds timestamps to milliseconds,
NUT changes the time base and drops the decode timestamps, MP4 takes only some codecs. So the format is our own
and minimal::

    b"ELANSEG1"
    per packet: struct "<qqqBI" (pts, dts, duration, flags, size), then ``size`` bytes
    JSON trailer (codec, extradata, time base, frames, picture size, SHA-256 of the packet records), its length
    as "<Q", b"ELANEND1"

The trailer comes last, so a file cut short by a crash has none and reads as unfinished; the checksum catches
damage a decoder would conceal (FFV1 decodes zeroed bytes without complaint). The same bytes travel
between a Ray worker and the driver.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.error

__all__ = ["SegmentFile", "SegmentFileWriter", "read_segment_file"]

_MAGIC, _END = b"ELANSEG1", b"ELANEND1"
_RECORD = struct.Struct("<qqqBI")
_TAIL = struct.Struct("<Q8s")
_NONE = -(2**63)  # a missing timestamp (FFmpeg's AV_NOPTS_VALUE)
_KEY = 1


class SegmentFileWriter:
    """Append encoded video packets to ``file`` (opened for binary writing); :meth:`finish` makes it complete."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.file.write(_MAGIC)
        self._digest = hashlib.sha256()
        self.frames = 0
        self.time_base: Fraction | None = None

    def add(self, packet: av.Packet) -> None:
        """One packet as an encoder gave it (``packet.time_base`` set)."""
        data = bytes(packet)
        if self.time_base is None and packet.time_base is not None:
            self.time_base = Fraction(packet.time_base)
        record = _RECORD.pack(
            _NONE if packet.pts is None else packet.pts,
            _NONE if packet.dts is None else packet.dts,
            packet.duration or 0,
            _KEY if packet.is_keyframe else 0,
            len(data),
        )
        for part in (record, data):
            self.file.write(part)
            self._digest.update(part)
        self.frames += 1

    def finish(self, *, codec_context: av.CodecContext, frames: int) -> None:
        """Write the trailer: the encoder's name and global header, the time base, and the frames encoded."""
        time_base = self.time_base or Fraction(codec_context.time_base)
        trailer = json.dumps(
            {
                "codec": codec_context.name,
                "extradata": bytes(codec_context.extradata or b"").hex(),
                "time_base": [time_base.numerator, time_base.denominator],
                "frames": frames,
                "packets": self.frames,
                "width": codec_context.width,
                "height": codec_context.height,
                "pix_fmt": codec_context.pix_fmt,
                "sha256": self._digest.hexdigest(),
            }
        ).encode()
        self.file.write(trailer)
        self.file.write(_TAIL.pack(len(trailer), _END))


@dataclass(frozen=True)
class SegmentFile:
    """A finished segment file: ``codec`` (FFmpeg encoder name), ``extradata`` (its global header, empty for codecs
    with in-band headers), ``time_base`` of the packets' timestamps, ``frames`` encoded."""

    path: Path
    codec: str
    extradata: bytes
    time_base: Fraction
    frames: int
    width: int
    height: int
    pix_fmt: str
    sha256: str
    _data_end: int

    def packets(self) -> Iterator[av.Packet]:
        """The packets in decode order, with pts/dts/duration in :attr:`time_base` and the keyframe flag."""
        with self.path.open("rb") as f:
            f.seek(len(_MAGIC))
            while f.tell() < self._data_end:
                pts, dts, duration, flags, size = _RECORD.unpack(f.read(_RECORD.size))
                packet = av.Packet(f.read(size))
                packet.pts = None if pts == _NONE else pts
                packet.dts = None if dts == _NONE else dts
                packet.duration = duration
                packet.time_base = self.time_base
                packet.is_keyframe = bool(flags & _KEY)
                yield packet

    def timestamps(self) -> list[tuple[int | None, int | None]]:
        """(pts, dts) of every packet in decode order, without reading the payloads."""
        stamps = []
        with self.path.open("rb") as f:
            f.seek(len(_MAGIC))
            while f.tell() < self._data_end:
                pts, dts, _, _, size = _RECORD.unpack(f.read(_RECORD.size))
                stamps.append((None if pts == _NONE else pts, None if dts == _NONE else dts))
                f.seek(size, 1)
        return stamps

    def decoded_frames(self) -> int:
        """How many pictures FFmpeg's decoder gives back for the packets; raises av.error.FFmpegError on damage."""
        descriptor = av.Codec(self.codec, "w")
        decoder = av.CodecContext.create(descriptor.canonical_name or descriptor.name, "r")  # libx264 -> h264
        if self.extradata:
            decoder.extradata = self.extradata
        decoder.width, decoder.height = self.width, self.height
        count = 0
        for packet in self.packets():
            count += len(decoder.decode(packet))
        return count + len(decoder.decode(None))

    def intact(self) -> bool:
        """Whether the packet records are those written (their SHA-256 is the trailer's)."""
        digest = hashlib.sha256()
        with self.path.open("rb") as f:
            f.seek(len(_MAGIC))
            remaining = self._data_end - len(_MAGIC)
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    return False
                digest.update(chunk)
                remaining -= len(chunk)
        return digest.hexdigest() == self.sha256

    def decodes(self) -> bool:
        """Whether the file is intact, every packet decodes, and the decoder gives back exactly :attr:`frames`
        pictures."""
        try:
            return self.intact() and self.decoded_frames() == self.frames
        except (av.error.FFmpegError, ValueError, OSError, struct.error):
            return False


def read_segment_file(path: Path) -> SegmentFile | None:
    """The finished segment file at ``path``; None where it is missing, cut short or not one."""
    try:
        with path.open("rb") as f:
            if f.read(len(_MAGIC)) != _MAGIC:
                return None
            f.seek(-_TAIL.size, 2)
            length, end = _TAIL.unpack(f.read(_TAIL.size))
            if end != _END:
                return None
            data_end = f.seek(-_TAIL.size - length, 2)
            trailer = json.loads(f.read(length))
    except (OSError, ValueError, struct.error):
        return None
    if not isinstance(trailer, dict) or not {"codec", "extradata", "time_base", "frames", "sha256"} <= set(trailer):
        return None
    return SegmentFile(
        path=path,
        codec=trailer["codec"],
        extradata=bytes.fromhex(trailer["extradata"]),
        time_base=Fraction(*trailer["time_base"]),
        frames=trailer["frames"],
        width=trailer["width"],
        height=trailer["height"],
        pix_fmt=trailer["pix_fmt"],
        sha256=trailer["sha256"],
        _data_end=data_end,
    )
