"""The streaming engine behind ``elan-video IN OUT``: decode, upscale and encode overlap in three stages.

    reader thread --(bounded queue)--> inference (calling thread) --(bounded queue)--> writer thread

Memory stays bounded by the queue sizes (plus the encoder's own lookahead), whatever the length of the video.
Non-video packets travel through the same queues so that one thread muxes everything. On CUDA the inference
stage double-buffers through pinned host memory with separate copy and compute streams (see ``_CudaRunner``).
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable

import av
import numpy as np
import torch

from ..media.video.reader import DecodedFrame, VideoReader
from ..media.video.writer import VideoWriter
from ..model.upscaler import Upscaler, from_network, peak_of, to_network

__all__ = ["ProgressCallback", "as_grey_picture", "default_cpu_threads", "grey_channel", "run_stream"]

ProgressCallback = Callable[[int, int | None], None]
"""Called after each written frame with (frames written, estimated total or None)."""

_END = object()
_POLL_S = 0.1


class _Stopped(Exception):
    """Another stage failed or the job was interrupted; unwind quietly."""


class _Channel:
    """A bounded queue whose blocking calls give up once ``stop`` is set (so no stage waits forever)."""

    def __init__(self, size: int, stop: threading.Event) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=size)
        self._stop = stop

    def put(self, item: object) -> None:
        while True:
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                if self._stop.is_set():
                    raise _Stopped from None

    def get(self) -> object:
        while True:
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    raise _Stopped from None


# -- inference stage ----------------------------------------------------------------------------------------


class _CpuRunner:
    """Synchronous inference: each submitted batch comes back at once."""

    def __init__(self, upscaler: Upscaler) -> None:
        self.upscaler = upscaler

    def submit(self, frames: list[DecodedFrame]) -> list[tuple[int, np.ndarray]]:
        out = self.upscaler.upscale_batch(np.stack([f.image for f in frames]))
        return [(f.pts, image) for f, image in zip(frames, out, strict=True)]

    def flush(self) -> list[tuple[int, np.ndarray]]:
        return []


class _CudaRunner:
    """Overlap host<->device copies with compute: two pinned host buffers per direction, two device buffers,
    a copy stream and a compute stream ordered by events.

    Batch k: the host fills pinned slot k%2, the copy stream uploads it, the compute stream runs the network
    into device slot k%2, and only then (at submit k+1) is its download queued on the copy stream. So while
    batch k computes, the copy stream downloads batch k-1 and uploads batch k+1. ``submit`` returns the
    batch before the previous one, whose download has had a whole compute to finish.
    """

    def __init__(self, upscaler: Upscaler, *, batch: int, height: int, width: int, dtype: np.dtype) -> None:
        self.up = upscaler
        dev = upscaler.device
        s = upscaler.scale
        self.peak = peak_of(dtype)
        self.np_dtype = dtype
        # torch has no uint16 arithmetic on every build; 16-bit frames travel as int32 on the device side.
        host_dtype = torch.uint8 if dtype == np.uint8 else torch.int32
        self.host_in = [torch.empty((batch, height, width, 3), dtype=host_dtype, pin_memory=True) for _ in range(2)]
        self.host_out = [
            torch.empty((batch, height * s, width * s, 3), dtype=host_dtype, pin_memory=True) for _ in range(2)
        ]
        self.dev_in = [torch.empty_like(t, device=dev) for t in self.host_in]
        self.dev_out = [torch.empty_like(t, device=dev) for t in self.host_out]
        self.copy = torch.cuda.Stream(device=dev)
        self.compute = torch.cuda.Stream(device=dev)
        self.uploaded = [torch.cuda.Event() for _ in range(2)]
        self.computed = [torch.cuda.Event() for _ in range(2)]
        self.downloaded = [torch.cuda.Event() for _ in range(2)]
        self.in_flight: deque[tuple[int, list[int]]] = deque()  # (slot, pts) computed, download not collected
        self.to_download: tuple[int, int] | None = None  # (slot, n) computed, download not yet queued
        self.count = 0

    def _queue_download(self) -> None:
        if self.to_download is None:
            return
        slot, n = self.to_download
        with torch.cuda.stream(self.copy):
            self.copy.wait_event(self.computed[slot])
            self.host_out[slot][:n].copy_(self.dev_out[slot][:n], non_blocking=True)
            self.downloaded[slot].record(self.copy)
        self.to_download = None

    def _collect(self) -> list[tuple[int, np.ndarray]]:
        slot, pts = self.in_flight.popleft()
        self.downloaded[slot].synchronize()
        arrays = self.host_out[slot][: len(pts)].numpy().astype(self.np_dtype)  # a copy: the slot is reused
        return list(zip(pts, arrays, strict=True))

    def submit(self, frames: list[DecodedFrame]) -> list[tuple[int, np.ndarray]]:
        slot, n = self.count % 2, len(frames)
        self.count += 1
        ready: list[tuple[int, np.ndarray]] = []
        # The slot's previous batch (k-2) must be fully downloaded before its buffers are reused.
        if len(self.in_flight) == 2:
            ready += self._collect()
        self.uploaded[slot].synchronize()
        host = self.host_in[slot][:n].numpy()
        for i, f in enumerate(frames):
            host[i] = f.image
        with torch.cuda.stream(self.copy):
            # Device input slot: compute of batch k-2 read it.
            self.copy.wait_event(self.computed[slot])
            self.dev_in[slot][:n].copy_(self.host_in[slot][:n], non_blocking=True)
            self.uploaded[slot].record(self.copy)
        with torch.cuda.stream(self.compute):
            self.compute.wait_event(self.uploaded[slot])
            self.compute.wait_event(self.downloaded[slot])  # device output slot: download of batch k-2
            y = self.up.forward_tensor(to_network(self.dev_in[slot][:n], peak=self.peak))
            self.dev_out[slot][:n].copy_(from_network(y, peak=self.peak))
            self.computed[slot].record(self.compute)
        # Batch k-1's download goes on the copy stream after batch k's upload, so it overlaps batch k's compute.
        self._queue_download()
        self.to_download = (slot, n)
        self.in_flight.append((slot, [f.pts for f in frames]))
        return ready

    def flush(self) -> list[tuple[int, np.ndarray]]:
        self._queue_download()
        ready: list[tuple[int, np.ndarray]] = []
        while self.in_flight:
            ready += self._collect()
        return ready


def as_grey_picture(alpha: np.ndarray) -> np.ndarray:
    """H x W alpha -> H x W x 3 grey picture: alpha is upscaled by the network, whose edges are sharper than an
    interpolation's."""
    return np.repeat(alpha[..., None], 3, axis=2)


def grey_channel(picture: np.ndarray) -> np.ndarray:
    """The upscaled grey picture back to one channel, same dtype."""
    return np.rint(picture.mean(axis=2, dtype=np.float64)).astype(picture.dtype)


def default_cpu_threads() -> int:
    """Intra-op threads for CPU inference inside the pipeline.

    From 4 cores up, all but one, which decoding and encoding use. Below that every core: the network is
    ~99 % of the work, and on a quiet 2-core machine ELAN-light at 320x180 ran the whole pipeline at
    0.317 fps with 2 threads against 0.233 fps with 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    spare = 1 if cores >= 4 else 0
    return max(1, min(torch.get_num_threads(), cores - spare))


def run_stream(
    reader: VideoReader,
    writer: VideoWriter,
    up: Upscaler,
    *,
    passthrough: tuple[int, ...],
    batch: int,
    size: int,
    progress: ProgressCallback | None,
    total: int | None,
    cpu_threads: int | None,
) -> None:
    """Run reader -> inference -> writer with bounded queues until the input ends; re-raises the first failure."""
    stop = threading.Event()
    inbox, outbox = _Channel(size, stop), _Channel(size, stop)
    failures: list[BaseException] = []

    def read() -> None:
        for item in reader.items(passthrough):
            inbox.put(item)
        inbox.put(_END)

    def write() -> None:
        done = 0
        while (item := outbox.get()) is not _END:
            if isinstance(item, av.Packet):
                writer.mux(item)
                continue
            pts, image = item  # type: ignore[misc]
            writer.write(image, pts)
            done += 1
            if progress is not None:
                progress(done, total)

    torch_threads = torch.get_num_threads()
    if up.device.type == "cuda":
        info = reader.info
        runner: _CpuRunner | _CudaRunner = _CudaRunner(
            up, batch=batch, height=info.height, width=info.width, dtype=np.dtype(reader.dtype)
        )
    else:
        runner = _CpuRunner(up)
        # PyTorch's OpenMP workers spin between operators; with every core taken they starve the decode and
        # encode threads (measured on 2 cores: 25 frames took 7.5 s with 2 threads, 0.26 s with 1).
        torch.set_num_threads(cpu_threads or default_cpu_threads())
    threads = [_stage(read, "elan-decode", failures, stop), _stage(write, "elan-encode", failures, stop)]
    try:
        # Started inside the try: Ctrl-C or SIGTERM lands in Thread.start's wait as anywhere else, and a stage
        # left running would go on decoding from a container its caller is closing (a crash in FFmpeg).
        for thread in threads:
            thread.start()
        inference = _Inference(runner, outbox, batch=batch, hold=4 * size)
        while (item := inbox.get()) is not _END:
            inference.take(item)  # type: ignore[arg-type]
        inference.finish()
        outbox.put(_END)
        # Join in short waits so that Ctrl-C still reaches this thread.
        while threads[1].is_alive():
            threads[1].join(_POLL_S)
    except _Stopped:
        pass
    finally:
        stop.set()
        for t in threads:
            while t.is_alive():
                t.join(_POLL_S)
        torch.set_num_threads(torch_threads)
    if failures:
        raise failures[0]


def _stage(
    body: Callable[[], None], name: str, failures: list[BaseException], stop: threading.Event
) -> threading.Thread:
    """A thread (not started) running ``body``; a failure is kept for the calling thread and stops the others."""

    def run() -> None:
        try:
            body()
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the calling thread
            failures.append(exc)
            stop.set()

    return threading.Thread(target=run, name=name)


class _Inference:
    """The middle stage: decoded frames in batches through the runner, results and passthrough packets out in
    order. A frame with alpha goes through as two pictures, its colour and its alpha as a grey picture of its
    own, so batching and the CUDA buffers stay RGB; they are joined again on the way out."""

    def __init__(self, runner: _CpuRunner | _CudaRunner, outbox: _Channel, *, batch: int, hold: int) -> None:
        self.runner, self.outbox, self.batch, self.hold = runner, outbox, batch, hold
        self.pending: list[DecodedFrame] = []
        self.held: list[av.Packet] = []  # passthrough packets waiting for the frames before them
        self.kinds: deque[str] = deque()  # "frame", "colour" (its alpha follows) or "alpha", per picture submitted
        self.colour: list[tuple[int, np.ndarray]] = []  # a frame's result waiting for its alpha's

    def take(self, item: DecodedFrame | av.Packet) -> None:
        if not isinstance(item, DecodedFrame):
            self.held.append(item)
            if len(self.held) > self.hold and not self.pending:
                self._emit([])
            return
        pictures = [(item, "frame")]
        if item.alpha is not None:
            companion = DecodedFrame(item.index, item.pts, item.time_base, as_grey_picture(item.alpha))
            pictures = [(item, "colour"), (companion, "alpha")]
        for picture, kind in pictures:
            self.pending.append(picture)
            self.kinds.append(kind)
            if len(self.pending) == self.batch:
                self._emit(self.runner.submit(self.pending))
                self.pending = []

    def finish(self) -> None:
        if self.pending:
            self._emit(self.runner.submit(self.pending))
            self.pending = []
        self._emit(self.runner.flush())

    def _emit(self, results: list[tuple[int, np.ndarray]]) -> None:
        for pts, image in results:
            kind = self.kinds.popleft()
            if kind == "colour":
                self.colour.append((pts, image))
            elif kind == "alpha":
                rgb_pts, rgb = self.colour.pop()
                self.outbox.put((rgb_pts, np.dstack([rgb, grey_channel(image)])))
            else:
                self.outbox.put((pts, image))
        while self.held:
            self.outbox.put(self.held.pop(0))
