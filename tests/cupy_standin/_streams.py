"""CUDA streams and events, with asynchronous host → device copies that really are late.

The model (imitating ``cupy/cuda/stream.pyx`` and the CUDA runtime's ordering rules):

* Every stream has a queue. Host → device copies (``ndarray.set``, ``cupy.asarray(numpy)``) are
  *queued* on the stream they are issued on and run only when something forces them, as a DMA
  engine runs them "some time later". A copy from pinned memory reads the host buffer when it
  runs, so a caller that refills a pinned buffer before the copy finished uploads the new data,
  as on a GPU; from pageable memory the host data are staged at the call (CUDA's rule for
  ``cudaMemcpyAsync`` from pageable memory), only the device write is late.
* Device computation (every array operation, kernel launch and device → host copy) runs at
  once, on the calling thread's current stream, after that stream's queue (stream order). On the
  legacy null stream it also waits for the queues of all blocking streams, and work on a
  blocking stream waits for the null stream (``non_blocking=True`` streams are independent).
* ``Event.record`` marks a position in a stream's queue. ``Event.synchronize``,
  ``Stream.synchronize``, ``Device.synchronize`` / ``runtime.deviceSynchronize`` run queued work
  (and count as host waits); ``stream.wait_event(e)`` runs ``e``'s stream up to ``e`` when the
  waiting stream has nothing queued before it, else queues that dependency.

So reading a device buffer whose upload was not waited for (no ``wait_event``/``synchronize``)
sees its old contents (or the garbage of a fresh allocation), and overwriting a pinned buffer
before the upload's event completed uploads the wrong data: the bugs a GPU shows now and then,
made deterministic. Nothing progresses on its own: ``Event.done``/``Stream.done`` stay False
until something forces the queue, so a host loop polling ``done`` would spin forever.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable
from typing import Any

from . import _counters
from ._config import CONFIG

#: One lock for "the device": queues are filled from any thread and drained under it.
LOCK = threading.RLock()
_PTRS = itertools.count(0x7F00_0000_1000, 0x100)


class _Queue:
    """Work queued on one stream: ``(sequence number, function, label)``."""

    def __init__(self, blocking: bool):
        self.blocking = blocking
        self.items: collections.deque = collections.deque()
        self.issued = 0  # sequence number of the last queued item
        self.completed = 0  # sequence number of the last item that ran
        self.running = False

    def push(self, fn: Callable[[], None], label: str) -> None:
        self.issued += 1
        self.items.append((self.issued, fn, label))

    def run_until(self, seq: int) -> None:
        """Run the queued items numbered up to ``seq``."""
        if self.completed >= seq:
            return
        if self.running:
            # the item being run waits for an item queued after it on the same stream
            raise RuntimeError("cupy_standin: circular stream dependency (it would hang a GPU)")
        self.running = True
        try:
            while self.items and self.items[0][0] <= seq:
                n, fn, _label = self.items.popleft()
                try:
                    fn()
                finally:
                    self.completed = n
        finally:
            self.running = False
        self.completed = max(self.completed, min(seq, self.issued))

    def drain(self) -> None:
        self.run_until(self.issued)


_QUEUES: dict[int, _Queue] = {0: _Queue(blocking=True)}


def _queue(stream: _BaseStream) -> _Queue:
    with LOCK:
        q = _QUEUES.get(stream.ptr)
        if q is None:
            q = _QUEUES[stream.ptr] = _Queue(blocking=not stream._non_blocking)
        return q


# -- ordering ---------------------------------------------------------------------------------


def _order_before(stream: _BaseStream) -> None:
    """Run what must precede new work on ``stream`` (its queue and the null stream's rules)."""
    q = _queue(stream)
    with LOCK:
        if stream.ptr == 0:
            for other in list(_QUEUES.values()):
                if other is not q and other.blocking:
                    other.drain()
        elif q.blocking:
            _QUEUES[0].drain()
        q.drain()


def compute(stream: _BaseStream | None = None) -> None:
    """Call before device work on ``stream`` (default: the current stream) runs eagerly."""
    _order_before(stream if stream is not None else get_current_stream())


def enqueue(stream: _BaseStream | None, fn: Callable[[], None], label: str) -> None:
    """Queue ``fn`` (a copy) on ``stream`` (default: the current stream)."""
    stream = stream if stream is not None else get_current_stream()
    q = _queue(stream)
    with LOCK:
        q.push(fn, label)


def synchronize_device() -> None:
    """Run everything queued on every stream (``cudaDeviceSynchronize``)."""
    with LOCK:
        for q in list(_QUEUES.values()):
            q.drain()


def pending() -> dict[int, list[str]]:
    """Labels of the work still queued, per stream pointer (for debugging and tests)."""
    with LOCK:
        return {ptr: [label for _n, _f, label in q.items] for ptr, q in _QUEUES.items() if q.items}


# -- current stream and device, per thread ----------------------------------------------------


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.streams: list[_BaseStream] = []
        self.current: _BaseStream | None = None
        self.device = 0


TLS = _ThreadState()


def get_current_stream(device_id: int = -1) -> _BaseStream:
    """The calling thread's current stream (the null stream unless one was made current)."""
    if TLS.streams:
        return TLS.streams[-1]
    return TLS.current if TLS.current is not None else Stream.null


def get_current_stream_ptr() -> int:
    return get_current_stream().ptr


# -- Stream and Event (cupy/cuda/stream.pyx) ---------------------------------------------------


class Event:
    """CUDA event: a point in a stream's queue.

    Parameters
    ----------
    block, disable_timing, interprocess : bool
        Accepted as by CuPy (``interprocess`` needs ``disable_timing``); timing is not modelled.
    """

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False):
        if interprocess and not disable_timing:
            raise ValueError("Timing must be disabled for interprocess events")
        self.ptr = next(_PTRS)
        self._queue: _Queue | None = None
        self._seq = 0

    @property
    def done(self) -> bool:
        """True when all work queued before the event has run (never recorded: True)."""
        with LOCK:
            return self._queue is None or self._queue.completed >= self._seq

    def record(self, stream: _BaseStream | None = None) -> None:
        """Mark the current end of ``stream``'s queue (default: the current stream)."""
        q = _queue(stream if stream is not None else get_current_stream())
        with LOCK:
            self._queue, self._seq = q, q.issued

    def synchronize(self) -> None:
        """Wait (on the host) until the work before the event has run: a host wait."""
        _counters.record("syncs", "Event.synchronize")
        self._complete()

    def _complete(self) -> None:
        if self._queue is not None:
            with LOCK:
                self._queue.run_until(self._seq)

    def __repr__(self) -> str:
        return f"<cupy.cuda.Event {self.ptr:#x}>"


class _BaseStream:
    """A CUDA stream: work on it runs in order."""

    _non_blocking = False

    def __init__(self, ptr: int, device_id: int):
        self.ptr = ptr
        self.device_id = device_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _BaseStream) and self.ptr == other.ptr

    def __hash__(self) -> int:
        return self.ptr

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ptr} (device {self.device_id})>"

    def __enter__(self) -> _BaseStream:
        TLS.streams.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        TLS.streams.pop()

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.ptr)

    def use(self) -> _BaseStream:
        """Make this stream the thread's current stream."""
        TLS.current = self
        return self

    @property
    def done(self) -> bool:
        """True if nothing is queued on this stream."""
        with LOCK:
            q = _queue(self)
            return q.completed >= q.issued

    def synchronize(self) -> None:
        """Wait (on the host) for all work queued on this stream: a host wait."""
        _counters.record("syncs", f"Stream.synchronize ({self.ptr:#x})")
        with LOCK:
            _order_before(self)

    def record(self, event: Event | None = None) -> Event:
        """Record ``event`` (a new one by default) at the end of this stream's queue."""
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        """Make later work on this stream wait until ``event`` completed."""
        with LOCK:
            if event._queue is None or event.done:
                return
            q = _queue(self)
            if q.completed >= q.issued and not CONFIG.defer_waits:
                event._complete()  # nothing queued here before the wait: it is satisfied now
            else:
                q.push(event._complete, f"wait for event {event.ptr:#x}")

    def add_callback(self, callback: Callable, arg: Any) -> None:
        enqueue(self, lambda: callback(self, 0, arg), "host callback")

    def launch_host_func(self, callback: Callable, arg: Any) -> None:
        enqueue(self, lambda: callback(arg), "host function")

    @property
    def is_non_blocking(self) -> bool:
        return self._non_blocking

    @property
    def priority(self) -> int:
        return 0

    def is_capturing(self) -> bool:
        return False


class Stream(_BaseStream):
    """``cupy.cuda.Stream(null=False, non_blocking=False, ptds=False, priority=None)``."""

    null: Stream  # the legacy default stream (pointer 0), set below
    ptds: Stream

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False, priority: int | None = None):
        if null:
            ptr, device_id = 0, -1
        elif ptds:
            ptr, device_id = 2, -1
        else:
            ptr, device_id = next(_PTRS), TLS.device
            self._non_blocking = bool(non_blocking)
        super().__init__(ptr, device_id)
        _queue(self)


class ExternalStream(_BaseStream):
    """A stream made elsewhere, known by its pointer."""

    def __init__(self, ptr: int, device_id: int = -1):
        super().__init__(int(ptr), device_id)


Stream.null = Stream(null=True)
Stream.ptds = Stream(ptds=True)
for _cls in (Event, _BaseStream, Stream, ExternalStream):
    _cls.__module__ = "cupy.cuda.stream"


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    """Milliseconds between two events: the stand-in measures no time, so always 0.0."""
    return 0.0
