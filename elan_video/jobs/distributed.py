"""Scale-out: a segmented job's segments upscaled by Ray actors, on this machine or a Ray cluster.

``--workers N`` starts Ray for the job on this machine (N actors sharing its cores; one GPU each where there are
enough, fractions of one where several share it); ``--ray ADDRESS`` joins a running cluster instead. No
filesystem is shared: for each segment the driver sends the bytes of the source that decoding it reads
(:mod:`~elan_video.jobs.source_bytes`) and gets back the encoded segment file (:mod:`~elan_video.jobs.segment_file`)
in chunks, written into the job's work folder as they arrive, so a distributed job resumes like a local one.
Each actor builds the network once, from its configuration and weights (sent once through Ray's object store),
and runs :func:`~elan_video.jobs.segments.encode_segment` as a local job does, for a segment of any video: one
:class:`WorkerPool` serves a job, or every video of a folder job, several files at a time.

Every actor has two segments in flight, one being processed and the next waiting with its bytes (the driver's
memory holds at most those, however many files share the pool). A worker that dies mid-segment (a crash, a node
lost) is replaced, and its segments go back to the queue for any worker to take again; a segment is given up after
:data:`_ATTEMPTS` losses.
Ray is imported only here, and only when a job asks for workers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import (
    ElanVideoError,
    InputError,
    MissingDependencyError,
    OptionError,
    OutputError,
    WarnCallback,
    first_line,
)
from ..media.video.encoding import EncoderPlan
from ..media.video.probe import VideoInfo
from ..model.options import UpscaleOptions
from ..model.upscaler import Upscaler
from .segment_file import read_segment_file
from .segments import Segment, SegmentResult, encode_segment, settle_network, worker_plan
from .source_bytes import SourceBytes, segment_source
from .streaming import ProgressCallback
from .workdir import WorkFolder

__all__ = ["INSTALL_HINT", "ScaleOut", "WorkerPool", "require_ray"]

INSTALL_HINT = "pip install 'elan-video[ray]'"
_ATTEMPTS = 3  # times a segment may lose its worker before the job gives up
_MISS_ROUNDS = 4  # times a segment is sent again with the bytes its worker missed
_IN_FLIGHT = 2  # segments per worker: one processed, the next waiting with its bytes
_CHUNK = 4 << 20  # bytes of an encoded segment per message back
_PROGRESS_EVERY = 0.2  # seconds between a worker's progress messages
_REACH_SECONDS = 10  # a cluster address must answer a TCP connection within this
# Attempts (about a second each) ray.init makes to reach a cluster's GCS. Ray's own 20 are for a head still
# recovering its state; a running cluster answers the first, and one that refuses the token would cost 20 s of
# retries before the error. A user's RAY_gcs_server_port_wait_time_s is left as it is.
_JOIN_ATTEMPTS_VARIABLE = "RAY_gcs_server_port_wait_time_s"
_JOIN_ATTEMPTS = "5"
# Test hook: a file name; the first worker to reach a segment's third frame creates it and exits at once, as a
# crashed or killed worker would (the file makes it happen once per job, whichever worker it is).
CRASH_ONCE_ENV = "ELAN_VIDEO_TEST_CRASH_ONCE"


@dataclass(frozen=True)
class ScaleOut:
    """Where a job's segments run: ``workers`` Ray actors (None: one per GPU of the cluster, else one per node),
    on a cluster at ``address`` or (None) on a Ray started for the job on this machine; ``device``: the device
    asked for (None: a worker's GPU where it has one)."""

    workers: int | None
    address: str | None
    device: object = None


def require_ray(workers: int | None, address: str | None) -> None:
    """Raise MissingDependencyError (one line, with the install command) when Ray cannot be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        what = f"--ray {address}" if address else f"--workers {workers}"
        raise MissingDependencyError(f"{what} runs on Ray, which is not installed: {INSTALL_HINT}") from None


# -- the worker ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setup:
    """What every actor is built from (the weights travel beside it, as an object reference)."""

    config: dict[str, Any]
    options: UpscaleOptions  # how the driver's network runs ("auto" resolved); model None, device as asked
    queue_size: int
    cpu_threads: int
    crash_once: str | None


@dataclass(frozen=True)
class _Video:
    """The file a segment belongs to, sent with each segment (an actor serves segments of any file)."""

    plan: EncoderPlan
    info: VideoInfo
    source: str  # the driver's path of the source, to name it in messages
    deinterlace: bool | None


class SegmentWorker:
    """A Ray actor (made one by :class:`WorkerPool`): the network built once, then one segment per call."""

    def __init__(self, setup: _Setup, weights: list[Any]) -> None:
        import ray

        from ..model.arch import ELAN

        torch.set_num_threads(setup.cpu_threads)
        model = ELAN(**setup.config)
        # The weights' reference comes boxed, so that Ray hands it over as it is: fetched here from the object
        # store, where the driver keeps it for the job (a replacement actor fetches it again).
        model.load_state_dict(ray.get(weights[0]))
        device = setup.options.device
        if device is None or str(device).startswith("cuda"):
            device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.setup = setup
        self.up = Upscaler.from_options(UpscaleOptions.of(setup.options, model=model, device=device))

    def where(self) -> str:
        return f"{socket.gethostname()} pid {os.getpid()} {self.up.device}"

    def encode(self, video: _Video, segment: Segment, source: SourceBytes) -> Iterator[tuple[str, Any]]:
        """Segment ``segment`` of ``video``, decoded from ``source``. Messages: ("progress", frames), ("warn", text),
        ("data", bytes) in order, then ("done", SegmentResult), or ("missing", [(offset, length)]) when the bytes
        sent were not all the reader needed."""
        messages: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=64)
        setup = self.setup

        def progress(done: int, total: int | None) -> None:
            if setup.crash_once and done >= 3 and not os.path.exists(setup.crash_once):
                Path(setup.crash_once).touch()
                os._exit(1)
            now = time.monotonic()
            if now - last[0] >= _PROGRESS_EVERY:
                last[0] = now
                messages.put(("progress", done))

        def work() -> None:
            out = _ChunkedFile(messages)
            try:
                result = encode_segment(
                    Path(video.source),
                    segment,
                    worker_plan(video.plan, setup.cpu_threads),
                    self.up,
                    out,  # type: ignore[arg-type]
                    deinterlace=video.deinterlace,
                    queue_size=setup.queue_size,
                    cpu_threads=setup.cpu_threads,
                    progress=progress,
                    warn=lambda text: messages.put(("warn", text)),
                    info=video.info,
                    opener=source.open,
                )
                if source.misses:
                    messages.put(("missing", source.misses))
                else:
                    out.flush()
                    messages.put(("done", replace(result, network=(self.up.backend, self.up.precision))))
            except BaseException as exc:
                messages.put(("missing", source.misses) if source.misses else ("error", exc))

        last = [time.monotonic()]
        thread = threading.Thread(target=work, name=f"segment {segment.index}", daemon=True)
        thread.start()
        while True:
            kind, payload = messages.get()
            if kind == "error":
                raise payload
            yield kind, payload
            if kind in ("done", "missing"):
                break
        thread.join()


class _ChunkedFile:
    """A write-only file whose bytes go out as ("data", bytes) messages of about :data:`_CHUNK` bytes."""

    def __init__(self, messages: queue.Queue[tuple[str, Any]]) -> None:
        self.messages = messages
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= _CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            self.messages.put(("data", bytes(self.buffer)))
            self.buffer = bytearray()


# -- the driver ---------------------------------------------------------------------------------------------


class _WorkerLost(Exception):
    pass


class _Progress:
    """The job's frames across workers: finished segments' and each in-flight segment's so far."""

    def __init__(self, callback: ProgressCallback | None, base: int, total: int) -> None:
        self.callback, self.base, self.total = callback, base, total
        self.running: dict[int, int] = {}
        self.lock = threading.Lock()

    def update(self, index: int, frames: int | None, *, finished: bool = False) -> None:
        with self.lock:
            if finished:
                self.base += frames or 0
                self.running.pop(index, None)
            elif frames is None:
                self.running.pop(index, None)
            else:
                self.running[index] = frames
            if self.callback is not None:
                self.callback(self.base + sum(self.running.values()), self.total)


class WorkerPool:
    """Ray actors that each hold the network of ``up`` and upscale segments of any video, for as long as the
    ``with`` block lasts (connecting to Ray, or starting it for the pool, on entry; stopping what it started on
    exit). :meth:`run` may be called from several threads at once, one file each; every actor still has at
    most :data:`_IN_FLIGHT` segments in flight.

    halt_on_failure: a file's failure kills the actors, ending its other segments at once (a pool of one job);
    False lets the segments in flight finish, so that the pool goes on serving the other files (a folder job).
    pictures: the videos to come; a pool of CPU workers on this machine settles ``up``'s backend and precision
    "auto" on the first frame of the first that decodes, here and with a worker's thread count, before its
    workers start, so that they share one decision (and one ONNX export) instead of each timing in silence.
    """

    def __init__(
        self,
        scale_out: ScaleOut,
        up: Upscaler,
        *,
        queue_size: int,
        cpu_threads: int | None,
        halt_on_failure: bool = True,
        pictures: Sequence[Path] = (),
    ) -> None:
        self.scale_out, self.up = scale_out, up
        self.queue_size, self.cpu_threads = queue_size, cpu_threads
        self.pictures = pictures
        self.halt_on_failure = halt_on_failure
        self.seats: list[_Seat] = []
        self.halted = threading.Event()
        self._actors: list[Any] = []
        self._started = False

    @property
    def workers(self) -> int:
        """Actors in the pool (once entered)."""
        return len(self.seats)

    def __enter__(self) -> WorkerPool:
        import ray

        if _on_this_machine(ray, self.scale_out):  # a Ray of this machine's CPUs (see _connect)
            threads = self._worker_threads(os.cpu_count() or 1, self.scale_out.workers or 1)
            settle_network(self.up, self.pictures, threads=threads)
        self._started = _connect(self.scale_out)
        try:
            self._start_actors(ray)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _worker_threads(self, cpus: float, workers: int) -> int:
        """PyTorch threads per worker: as asked, else an equal share of the cluster's CPUs."""
        return self.cpu_threads or max(1, int(cpus // workers))

    def _start_actors(self, ray: Any) -> None:
        scale_out, up = self.scale_out, self.up
        if scale_out.workers is None:
            gpus = 0 if str(scale_out.device) == "cpu" else int(ray.cluster_resources().get("GPU", 0))
            scale_out = replace(scale_out, workers=gpus or len([n for n in ray.nodes() if n.get("Alive")]) or 1)
        workers = scale_out.workers
        assert workers is not None
        gpus, cpus = _resources(scale_out)
        setup = _Setup(
            config={**up.model.config(), "rgb_range": up.model.rgb_range},
            options=UpscaleOptions(
                scale=up.scale,
                device=None if scale_out.device is None else str(scale_out.device),
                precision=up.precision,
                backend=up.backend,
                tile=up.tile,
                tile_overlap=up.tile_overlap,
                batch=up.batch,
                max_memory=up.max_memory,
            ),
            queue_size=self.queue_size,
            cpu_threads=self._worker_threads(cpus, workers),
            crash_once=os.environ.get(CRASH_ONCE_ENV) or None,
        )
        state = ray.put({name: t.detach().cpu() for name, t in up.model.state_dict().items()})
        remote = ray.remote(SegmentWorker).options(
            num_cpus=math.floor(cpus / workers * 1000) / 1000 or 0.001,
            num_gpus=gpus,
            # A lost actor is replaced by the driver (_Seat), and the segments it had are sent again whole: half
            # of one streamed back cannot be continued.
            max_restarts=0,
            max_task_retries=0,
            scheduling_strategy="SPREAD",
        )

        def new_actor() -> Any:
            self._actors.append(remote.remote(setup, [state]))
            return self._actors[-1]

        self.seats = [_Seat(new_actor) for _ in range(workers)]
        _wait_ready([seat.actor for seat in self.seats])

    def __exit__(self, *exc: object) -> None:
        import ray

        self.halted.set()
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if self._started:
            ray.shutdown()
            self._started = False

    def halt(self) -> None:
        """End every segment in flight at once (Ctrl-C): the actors are killed and :meth:`run` calls raise
        KeyboardInterrupt; the pool serves no more segments."""
        import ray

        self.halted.set()
        for seat in self.seats:
            with contextlib.suppress(Exception):
                ray.kill(seat.actor)

    def run(
        self,
        *,
        source: Path,
        info: VideoInfo,
        segments: list[Segment],
        plan: EncoderPlan,
        folder: WorkFolder,
        deinterlace: bool | None,
        progress: ProgressCallback | None,
        done: int,
        total: int,
        warn: WarnCallback,
    ) -> dict[int, SegmentResult]:
        """Encode ``segments`` of ``source`` on the actors into ``folder`` (each recorded there once its file is
        complete); their results by index. ``done``/``total``: the job's frames before and in all, for
        ``progress``."""
        video = _Video(plan=plan, info=info, source=str(source), deinterlace=deinterlace)
        driver = _Driver(self, video, source, folder, _Progress(progress, done, total), warn)
        return driver.run(segments)


def _wait_ready(actors: list[Any]) -> None:
    """Wait until every actor has built its network; raise the error of one that could not."""
    import ray
    import ray.exceptions

    try:
        ray.get([actor.where.remote() for actor in actors])
    except ray.exceptions.RayError as exc:
        cause = getattr(exc, "cause", None)
        while isinstance(cause, ray.exceptions.RayError) and getattr(cause, "cause", None) is not None:
            cause = cause.cause
        if isinstance(cause, ElanVideoError):
            raise cause from None
        reason = str(cause or exc).strip().splitlines()
        raise OutputError(f"a Ray worker could not start: {reason[-1] if reason else type(exc).__name__}") from None


class _Seat:
    """A worker's place: its actor, replaced by a new one when it is lost (at most :data:`_ATTEMPTS` times)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make
        self.actor = make()
        self.replaced = 0
        self.lock = threading.Lock()
        self.permits = threading.Semaphore(_IN_FLIGHT)  # segments in flight on it, whichever files they are of

    def replace(self, lost: Any) -> bool:
        """A new actor for ``lost`` (unless another slot replaced it already); False when none may be made."""
        import ray

        with self.lock:
            if self.actor is lost:
                if self.replaced >= _ATTEMPTS:
                    return False
                with contextlib.suppress(Exception):
                    ray.kill(lost)
                self.actor = self.make()
                self.replaced += 1
            return True


def _connect(scale_out: ScaleOut) -> bool:
    """Connect to Ray (a cluster's address, or a Ray started here for the job); whether it was started here.
    A process already connected (a notebook, the tests) keeps its connection."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    if scale_out.address is not None:
        _join(ray, scale_out.address, quiet)
        return True
    try:
        # "local": a Ray of the job's own, even where `ray start` left a cluster that ray.init() would join.
        ray.init(address="local", num_cpus=os.cpu_count() or 1, num_gpus=_local_gpus(scale_out.device), **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise OptionError(f"cannot start a local Ray: {first_line(exc)}") from None
    return True


def _join(ray: Any, address: str, quiet: dict[str, Any]) -> None:
    """Connect to the cluster at ``address``. Ray's C++ client reports each failed attempt on file descriptor 2
    (dozens of lines when the cluster wants a token this process lacks): they are kept aside and read for the
    reason, so that a failure is one line."""
    _check_reachable(address)
    with tempfile.TemporaryFile("w+") as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        budget_set = _JOIN_ATTEMPTS_VARIABLE not in os.environ
        if budget_set:
            os.environ[_JOIN_ATTEMPTS_VARIABLE] = _JOIN_ATTEMPTS
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            failure: BaseException | None = exc
        else:
            failure = None
        finally:
            if budget_set:
                del os.environ[_JOIN_ATTEMPTS_VARIABLE]
            os.dup2(saved, 2)
            os.close(saved)
        if failure is None:
            return
        log.seek(0)
        if "InvalidAuthToken" in log.read():
            if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                raise OptionError(
                    f"the Ray cluster at {address} uses token authentication: set RAY_AUTH_MODE=token and its "
                    "token (RAY_AUTH_TOKEN, or ~/.ray/auth_token copied from the head node)"
                )
            raise OptionError(
                f"the Ray cluster at {address} refused this machine's token (RAY_AUTH_TOKEN or "
                "~/.ray/auth_token): use the head node's"
            )
        raise OptionError(f"cannot reach the Ray cluster at {address}: {first_line(failure)}")


def _check_reachable(address: str) -> None:
    """Fail in seconds where nothing answers at a HOST:PORT address: ray.init retries such an address for minutes.
    Other forms ("auto", "ray://...") are left to Ray."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise OptionError(f"--ray {address}: not a cluster address (HOST:PORT, as `ray start --head` prints it)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_REACH_SECONDS):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise OptionError(f"cannot reach the Ray cluster at {address}: {reason}") from None


def _local_gpus(device: object) -> int:
    if device is not None and str(device) == "cpu":
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _on_this_machine(ray: Any, scale_out: ScaleOut) -> bool:
    """Whether the pool's workers run on this machine's CPUs: no cluster address, no GPU for them, and Ray not
    yet connected (it is started for the job) or connected to this machine alone."""
    if scale_out.address is not None or _local_gpus(scale_out.device):
        return False
    if not ray.is_initialized():
        return True
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return len(nodes) == 1 and nodes[0].get("NodeManagerHostname") == socket.gethostname()


def _resources(scale_out: ScaleOut) -> tuple[float, float]:
    """(GPUs per worker, CPUs in the cluster): one GPU each where there are enough, else equal shares."""
    import ray

    available = ray.cluster_resources()
    cpus = float(available.get("CPU", 1.0))
    gpus = 0.0 if str(scale_out.device) == "cpu" else float(available.get("GPU", 0.0))
    if str(scale_out.device).startswith("cuda") and not gpus:
        raise OptionError(f"--device {scale_out.device}: the Ray cluster has no GPU")
    share = min(1.0, math.floor(gpus / (scale_out.workers or 1) * 1000) / 1000) if gpus else 0.0
    return share, cpus


class _Driver:
    """One file's segments handed to the pool's actors by :data:`_IN_FLIGHT` threads per actor, each sending one
    segment at a time once the actor has a free place (other files may be using it too)."""

    def __init__(
        self,
        pool: WorkerPool,
        video: _Video,
        source: Path,
        folder: WorkFolder,
        progress: _Progress,
        warn: WarnCallback,
    ) -> None:
        self.pool, self.video, self.source, self.folder = pool, video, source, folder
        self.progress, self.warn = progress, warn
        self.lock = threading.Lock()
        self.stop = threading.Event()  # this file's job is over: no new segment, and with halt, none in flight
        self.pending: deque[Segment] = deque()
        self.losses: dict[int, int] = {}
        self.results: dict[int, SegmentResult] = {}
        self.failure: BaseException | None = None

    def run(self, segments: list[Segment]) -> dict[int, SegmentResult]:
        self.pending.extend(segments)
        slots = [
            threading.Thread(target=self._slot, args=(seat,), name=f"ray slot {i}", daemon=True)
            for i, seat in enumerate(self.pool.seats * _IN_FLIGHT)
        ]
        for slot in slots:
            slot.start()
        try:
            while any(slot.is_alive() for slot in slots):
                for slot in slots:
                    slot.join(0.1)
        except BaseException:
            self.stop.set()
            self.pool.halt()
            for slot in slots:
                slot.join(30)
            raise
        if self.failure is not None:
            raise self.failure
        if self.pool.halted.is_set():
            raise KeyboardInterrupt  # the pool was stopped under this file (Ctrl-C in a folder job)
        missing = [s.index for s in segments if s.index not in self.results]
        if missing:
            raise OutputError(f"{self.source}: segments {missing} were not done: every Ray worker was lost")
        return self.results

    def _stopped(self) -> bool:
        return self.stop.is_set() or self.pool.halted.is_set()

    def _fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = exc
            self.pending.clear()
        if self.pool.halt_on_failure:
            self.stop.set()
            self.pool.halt()

    def _slot(self, seat: _Seat) -> None:
        while not self._stopped():
            if not seat.permits.acquire(timeout=0.1):
                with self.lock:
                    if not self.pending:
                        return
                continue
            try:
                if not self._one(seat):
                    return
            finally:
                seat.permits.release()

    def _one(self, seat: _Seat) -> bool:
        """Send the next pending segment to ``seat``'s actor; False when this slot is done."""
        with self.lock:
            if not self.pending:
                return False
            segment = self.pending.popleft()
        actor = seat.actor
        try:
            self.results[segment.index] = self._segment(actor, segment)
        except _Halted:
            return False
        except _WorkerLost as lost:
            self.progress.update(segment.index, None)
            if self._stopped():
                return False
            with self.lock:
                self.losses[segment.index] = count = self.losses.get(segment.index, 0) + 1
                self.pending.appendleft(segment)
            if count >= _ATTEMPTS:
                what = f"segment {segment.index} lost its worker {count} times (last: {lost})"
                self._fail(OutputError(f"{self.source}: {what}"))
                return False
            return seat.replace(actor)  # False: lost too often; the other workers take its segments
        except BaseException as exc:
            self._fail(exc)
            return False
        return True

    def _segment(self, actor: Any, segment: Segment) -> SegmentResult:
        """One segment on ``actor`` into the work folder (sent again with more bytes while its reader misses
        some); raises _WorkerLost when the actor dies on the way."""
        import ray
        import ray.exceptions

        source = segment_source(self.source, self.video.info, segment, deinterlace=self.video.deinterlace)
        for _ in range(_MISS_ROUNDS):
            source_ref = ray.put(source)
            missing: list[tuple[int, int]] | None = None
            result: SegmentResult | None = None
            try:
                with self.folder.segment_writer(segment.index) as out:
                    for ref in actor.encode.remote(self.video, segment, source_ref):
                        if self._stopped():
                            raise _Halted
                        kind, payload = ray.get(ref)
                        if kind == "data":
                            out.write(payload)
                        elif kind == "progress":
                            self.progress.update(segment.index, payload)
                        elif kind == "warn":
                            self.warn(payload)
                        elif kind == "missing":
                            missing = payload
                            raise _Halted
                        else:
                            result = payload
            except _Halted:
                if missing is None:
                    raise
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause
                if isinstance(cause, ElanVideoError):
                    raise cause from None
                raise
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
                raise _WorkerLost(type(exc).__name__) from None
            finally:
                del source_ref
            if missing is not None:
                source = source.adding(self.source, missing)
                continue
            assert result is not None
            written = read_segment_file(self.folder.segment_path(segment.index))
            if written is None or written.frames != result.frames:
                raise OutputError(f"{self.source}: segment {segment.index} came back from its worker incomplete")
            with self.lock:
                self.folder.record(segment.index, result.frames)
            self.progress.update(segment.index, result.frames, finished=True)
            return result
        raise InputError(f"{self.source}: segment {segment.index}: its worker kept missing bytes of the source")


class _Halted(Exception):
    """The job stopped (another segment failed, Ctrl-C), or a worker asked for more bytes."""
