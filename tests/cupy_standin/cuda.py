"""``cupy.cuda``: devices, the runtime API, streams, events, memory (``cupy/cuda/*.pyx``).

The device is fake and configurable (``_config.CONFIG``): its name says it is the stand-in, its
memory size drives ``mem_info``/``memGetInfo`` and out-of-memory errors. Streams and events are
those of ``_streams`` (asynchronous copies modelled there). Synchronizing the device runs every
queued copy and counts as a host wait.
"""

from __future__ import annotations

from typing import Any

from . import _config, _counters, _memory, _streams
from ._streams import Event, ExternalStream, Stream, get_current_stream, get_elapsed_time

CONFIG = _config.CONFIG


class CUDARuntimeError(RuntimeError):
    """``cupy_backends.cuda.api.runtime.CUDARuntimeError``."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


CUDARuntimeError.__module__ = "cupy_backends.cuda.api.runtime"


def _check_device(device_id: int) -> int:
    if not 0 <= int(device_id) < CONFIG.device_count:
        raise CUDARuntimeError(101, "cudaErrorInvalidDevice: invalid device ordinal")
    return int(device_id)


# -- runtime -------------------------------------------------------------------------------------


def getDeviceCount() -> int:
    return CONFIG.device_count


def getDevice() -> int:
    return _streams.TLS.device


def setDevice(device: int) -> None:
    _streams.TLS.device = _check_device(device)


def deviceSynchronize() -> None:
    """Wait for all work on all streams (runs every queued copy): a host wait."""
    _counters.record("syncs", "runtime.deviceSynchronize")
    _streams.synchronize_device()


def memGetInfo() -> tuple[int, int]:
    total = CONFIG.total_memory
    return max(total - _memory.DEFAULT_POOL.total_bytes(), 0), total


def getDeviceProperties(device: int) -> dict[str, Any]:
    _check_device(device)
    major, minor = CONFIG.compute_capability
    return {
        "name": CONFIG.device_name.encode(),
        "totalGlobalMem": CONFIG.total_memory,
        "sharedMemPerBlock": 49152,
        "regsPerBlock": 65536,
        "warpSize": 32,
        "maxThreadsPerBlock": CONFIG.max_threads_per_block,
        "maxThreadsDim": (1024, 1024, 64),
        "maxGridSize": (2147483647, 65535, 65535),
        "clockRate": 1_000_000,
        "totalConstMem": 65536,
        "major": major,
        "minor": minor,
        "multiProcessorCount": CONFIG.multiprocessor_count,
        "singleToDoublePrecisionPerfRatio": CONFIG.single_to_double_ratio,
        "concurrentKernels": 1,
        "pciBusID": 0,
        "pciDeviceID": device,
        "pciDomainID": 0,
        "l2CacheSize": 50 * 1024**2,
        "maxThreadsPerMultiProcessor": 2048,
        "memoryClockRate": 1_000_000,
        "memoryBusWidth": 5120,
        "integrated": 0,
        "canMapHostMemory": 1,
        "managedMemory": 1,
        "pageableMemoryAccess": 0,
        "uuid": b"cupy_standin" + bytes(4),
    }


def deviceGetAttribute(attrib: int, device: int) -> int:
    raise NotImplementedError("cupy_standin: use Device(i).attributes[name]")


def runtimeGetVersion() -> int:
    return 12080


def driverGetVersion() -> int:
    return 12080


def streamSynchronize(stream: int) -> None:
    _counters.record("syncs", "runtime.streamSynchronize")
    _streams._order_before(_streams.ExternalStream(stream))


def runtime_namespace() -> dict[str, Any]:
    return {
        "CUDARuntimeError": CUDARuntimeError,
        "getDeviceCount": getDeviceCount,
        "getDevice": getDevice,
        "setDevice": setDevice,
        "deviceSynchronize": deviceSynchronize,
        "memGetInfo": memGetInfo,
        "getDeviceProperties": getDeviceProperties,
        "deviceGetAttribute": deviceGetAttribute,
        "runtimeGetVersion": runtimeGetVersion,
        "driverGetVersion": driverGetVersion,
        "streamSynchronize": streamSynchronize,
        "is_hip": False,
        "streamLegacy": 1,
        "streamPerThread": 2,
    }


# -- Device (cupy/cuda/device.pyx) --------------------------------------------------------------


class Device:
    """``cupy.cuda.Device(device=None)``: the current device by default."""

    def __init__(self, device: Any = None):
        self.id = _streams.TLS.device if device is None else int(device)
        self._stack: list[int] = []

    def __int__(self) -> int:
        return self.id

    def __index__(self) -> int:
        return self.id

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return self.id

    def __enter__(self) -> Device:
        self._stack.append(_streams.TLS.device)
        if self.id != _streams.TLS.device:
            setDevice(self.id)
        return self

    def __exit__(self, *exc: Any) -> None:
        setDevice(self._stack.pop())

    def use(self) -> Device:
        setDevice(self.id)
        return self

    def synchronize(self) -> None:
        """Wait for all work on the device: a host wait (seen by ``cupyx.allow_synchronize``)."""
        _check_device(self.id)
        _counters.declare_synchronize(f"Device({self.id}).synchronize")
        _streams.synchronize_device()

    @property
    def compute_capability(self) -> str:
        major, minor = CONFIG.compute_capability
        return f"{major}{minor}"

    @property
    def mem_info(self) -> tuple[int, int]:
        _check_device(self.id)
        return memGetInfo()

    @property
    def attributes(self) -> dict[str, int]:
        _check_device(self.id)
        major, minor = CONFIG.compute_capability
        return {
            "MultiProcessorCount": CONFIG.multiprocessor_count,
            "MaxThreadsPerBlock": CONFIG.max_threads_per_block,
            "MaxBlockDimX": 1024,
            "MaxBlockDimY": 1024,
            "MaxBlockDimZ": 64,
            "MaxGridDimX": 2147483647,
            "MaxGridDimY": 65535,
            "MaxGridDimZ": 65535,
            "MaxSharedMemoryPerBlock": 49152,
            "WarpSize": 32,
            "ComputeCapabilityMajor": major,
            "ComputeCapabilityMinor": minor,
            "SingleToDoublePrecisionPerfRatio": CONFIG.single_to_double_ratio,
            "TotalConstantMemory": 65536,
            "L2CacheSize": 50 * 1024**2,
            "MaxThreadsPerMultiProcessor": 2048,
            "ConcurrentKernels": 1,
            "Integrated": 0,
            "PageableMemoryAccess": 0,
        }

    @property
    def pci_bus_id(self) -> str:
        return f"0000:{self.id:02x}:00.0"

    def __getattr__(self, name: str) -> Any:
        if name in ("cublas_handle", "cusolver_handle", "cusolver_sp_handle", "cusparse_handle", "cutensor_handle"):
            raise NotImplementedError(f"cupy_standin has no {name}")
        raise AttributeError(f"'cupy.cuda.device.Device' object has no attribute '{name}'")


Device.__module__ = "cupy.cuda.device"


def get_device_id() -> int:
    return _streams.TLS.device


def is_available() -> bool:
    return CONFIG.device_count > 0


def set_allocator(allocator: Any = None) -> None:
    """Accepted and ignored (the stand-in always accounts in its default pool)."""


def get_allocator() -> Any:
    return _memory.DEFAULT_POOL.malloc


def set_pinned_memory_allocator(allocator: Any = None) -> None:
    """Accepted and ignored."""


def _memory_namespace() -> dict[str, Any]:
    from ._array import MemoryPointer

    return {
        "OutOfMemoryError": _memory.OutOfMemoryError,
        "MemoryPool": _memory.MemoryPool,
        "MemoryPointer": MemoryPointer,
        "set_allocator": set_allocator,
        "get_allocator": get_allocator,
    }


def _pinned_namespace() -> dict[str, Any]:
    return {
        "PinnedMemoryPool": _memory.PinnedMemoryPool,
        "PinnedMemoryPointer": _memory.PinnedMemoryPointer,
        "alloc_pinned_memory": _memory.alloc_pinned_memory,
        "set_pinned_memory_allocator": set_pinned_memory_allocator,
    }


def namespaces() -> dict[str, dict[str, Any]]:
    """Objects of ``cupy.cuda`` and its submodules (modules themselves are added by ``_modules``)."""
    from ._array import MemoryPointer
    from ._functions import Gap

    stream_ns = {
        "Stream": Stream,
        "ExternalStream": ExternalStream,
        "Event": Event,
        "get_current_stream": get_current_stream,
        "get_elapsed_time": get_elapsed_time,
    }
    device_ns = {"Device": Device, "get_device_id": get_device_id}
    cuda_ns: dict[str, Any] = {
        **stream_ns,
        **device_ns,
        "MemoryPool": _memory.MemoryPool,
        "MemoryPointer": MemoryPointer,
        "PinnedMemoryPool": _memory.PinnedMemoryPool,
        "alloc_pinned_memory": _memory.alloc_pinned_memory,
        "set_allocator": set_allocator,
        "get_allocator": get_allocator,
        "set_pinned_memory_allocator": set_pinned_memory_allocator,
        "is_available": is_available,
        "compiler": Gap("cupy.cuda.compiler", "kernels are compiled by tests/cudasim"),
        "profiler": Gap("cupy.cuda.profiler"),
        "nvtx": Gap("cupy.cuda.nvtx"),
        "cub": Gap("cupy.cuda.cub"),
        "texture": Gap("cupy.cuda.texture"),
        "Module": Gap("cupy.cuda.Module", "use cupy.RawModule"),
        "Function": Gap("cupy.cuda.Function", "use cupy.RawModule"),
    }
    pinned = _pinned_namespace()
    return {
        "cupy.cuda": cuda_ns,
        "cupy.cuda.runtime": runtime_namespace(),
        "cupy.cuda.stream": stream_ns,
        "cupy.cuda.device": device_ns,
        "cupy.cuda.memory": _memory_namespace(),
        "cupy.cuda.pinned_memory": pinned,
    }
