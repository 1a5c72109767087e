"""The GPU side of a bench child: NVML readings (optional) and ggml's own devices (through llama.cpp's library).

NVML is optional: without pynvml, a driver or a GPU every NVML field stays None, never a zero that reads like a
measurement. ggml calls go through the very library llama.cpp loaded (`llama_cpp._lib`, whose symbol lookup walks
libllama's own dependencies), so buffer-type pointers compare equal to llama.cpp's: a second copy of ggml would
hand out different pointers and a CPU override would then be taken as some other buffer type.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Any

MIB = 1024 * 1024
GGML_BACKEND_DEVICE_TYPE_GPU = 1
GGML_TYPE_I8 = 24


class Nvml:
    """A handful of NVML readings for one process; `open()` returns None where NVML cannot answer."""

    def __init__(self, pynvml: Any) -> None:
        self.nv = pynvml
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

    @classmethod
    def open(cls) -> "Nvml | None":
        try:
            import pynvml

            pynvml.nvmlInit()
            nvml = cls(pynvml)
        except Exception:  # no pynvml, no driver, no device: all the same to us
            return None
        return nvml if nvml.handles else None

    def used_mib(self, index: int) -> float:
        """Used memory as nvidia-smi shows it: the v2 query leaves out the driver's reservation (~0.5 GiB on an
        H100), which the v1 query counts as used even on an idle card."""
        handle = self.handles[index]
        v2 = getattr(self.nv, "nvmlMemory_v2", None)
        if v2 is not None:
            try:
                return self.nv.nvmlDeviceGetMemoryInfo(handle, version=v2).used / MIB
            except self.nv.NVMLError:
                pass  # driver without the v2 query
        return self.nv.nvmlDeviceGetMemoryInfo(handle).used / MIB

    def total_mib(self, index: int) -> float:
        return self.nv.nvmlDeviceGetMemoryInfo(self.handles[index]).total / MIB

    def process_mib(self, index: int, pid: int) -> float | None:
        """This process's memory on a device; None when NVML hides it (containers show host pids, or N/A)."""
        try:
            processes = self.nv.nvmlDeviceGetComputeRunningProcesses(self.handles[index])
        except self.nv.NVMLError:
            return None
        for process in processes:
            if process.pid == pid and process.usedGpuMemory is not None:
                return process.usedGpuMemory / MIB
        return None

    def device_of(self, pid: int) -> int:
        """The device this process has a context on; else the first of CUDA_VISIBLE_DEVICES; else 0."""
        for index in range(len(self.handles)):
            if self.process_mib(index, pid) is not None:
                return index
        first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        if first.isdigit() and int(first) < len(self.handles):
            return int(first)
        if first.startswith(("GPU-", "MIG-")):
            try:
                uuid_handle = self.nv.nvmlDeviceGetHandleByUUID(first)
                return next(i for i, h in enumerate(self.handles) if self._uuid(h) == self._uuid(uuid_handle))
            except (self.nv.NVMLError, StopIteration):
                pass
        return 0

    def pinned_indices(self) -> list[int]:
        """NVML's indices of the GPUs CUDA numbers 0, 1, ... in this process: CUDA_VISIBLE_DEVICES in its order (the
        runner pins them by index with CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML's own order), else all of NVML's."""
        visible = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
        if not visible or not all(part.isdigit() for part in visible):
            return list(range(len(self.handles)))
        return [int(part) for part in visible if int(part) < len(self.handles)]

    def _uuid(self, handle: Any) -> str:
        return _text(self.nv.nvmlDeviceGetUUID(handle))

    def fingerprint(self, index: int) -> dict[str, Any]:
        nv, handle = self.nv, self.handles[index]
        cuda = nv.nvmlSystemGetCudaDriverVersion()
        major, minor = nv.nvmlDeviceGetCudaComputeCapability(handle)
        return {
            "gpu_name": _text(nv.nvmlDeviceGetName(handle)),
            "gpu_count": len(self.handles),
            "gpu_driver": _text(nv.nvmlSystemGetDriverVersion()),
            "cuda_version": f"{cuda // 1000}.{cuda % 1000 // 10}",
            "compute_capability": f"{major}.{minor}",
        }

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except Exception:
            pass


class PeakSampler:
    """Polls a device's used memory from a thread while the model loads and runs: the peak NVML saw."""

    def __init__(self, nvml: Nvml, index: int, period_s: float = 0.05) -> None:
        self.nvml, self.index, self.period_s = nvml, index, period_s
        self.peak_mib = nvml.used_mib(index)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self.nvml.used_mib(self.index))

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.peak_mib = max(self.peak_mib, self.nvml.used_mib(self.index))


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


class Ggml:
    """ggml backend calls on the library llama.cpp itself links (pass `llama_cpp.llama_cpp._lib`)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        signatures = {
            "ggml_backend_cpu_buffer_type": ([], ctypes.c_void_p),
            "ggml_backend_dev_count": ([], ctypes.c_size_t),
            "ggml_backend_dev_get": ([ctypes.c_size_t], ctypes.c_void_p),
            "ggml_backend_dev_type": ([ctypes.c_void_p], ctypes.c_int),
            "ggml_backend_dev_name": ([ctypes.c_void_p], ctypes.c_char_p),
            "ggml_backend_dev_description": ([ctypes.c_void_p], ctypes.c_char_p),
            "ggml_backend_dev_memory": ([ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                         ctypes.POINTER(ctypes.c_size_t)], None),
            "ggml_backend_dev_buffer_type": ([ctypes.c_void_p], ctypes.c_void_p),
            "ggml_tensor_overhead": ([], ctypes.c_size_t),
            "ggml_init": ([_InitParams], ctypes.c_void_p),
            "ggml_free": ([ctypes.c_void_p], None),
            "ggml_new_tensor_1d": ([ctypes.c_void_p, ctypes.c_int, ctypes.c_int64], ctypes.c_void_p),
            "ggml_backend_alloc_ctx_tensors_from_buft": ([ctypes.c_void_p, ctypes.c_void_p], ctypes.c_void_p),
            "ggml_backend_buffer_free": ([ctypes.c_void_p], None),
            "ggml_backend_tensor_copy": ([ctypes.c_void_p, ctypes.c_void_p], None),
        }
        for name, (argtypes, restype) in signatures.items():
            func = getattr(lib, name)
            func.argtypes, func.restype = argtypes, restype

    def cpu_buffer_type(self) -> int:
        """The pointer llama.cpp compares overrides against to mean 'CPU memory (with its repack types)'."""
        return self.lib.ggml_backend_cpu_buffer_type()

    def cpu_buffer_type_origin(self) -> str:
        """The shared library that pointer's function lives in: worth a log line when checking a new build."""
        return _symbol_file(ctypes.cast(self.lib.ggml_backend_cpu_buffer_type, ctypes.c_void_p).value)

    def gpus(self) -> list[int]:
        lib = self.lib
        devices = [lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count())]
        return [d for d in devices if lib.ggml_backend_dev_type(d) == GGML_BACKEND_DEVICE_TYPE_GPU]

    def name(self, device: int) -> str:
        return _text(self.lib.ggml_backend_dev_name(device))

    def description(self, device: int) -> str:
        return _text(self.lib.ggml_backend_dev_description(device))

    def memory_mib(self, device: int) -> tuple[float, float]:
        """(free, total) MiB; on CUDA this creates the device's primary context, after which NVML lists this process
        on the device it uses."""
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self.lib.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        return free.value / MIB, total.value / MIB

    def copy_bandwidth_gbs(self, device: int, mib: int = 1024, repeats: int = 10) -> float | None:
        """Best device-to-device copy of `mib` MiB in one buffer of the device, GB/s counting read plus write.

        ggml_backend_tensor_copy between two tensors of one CUDA buffer is a cudaMemcpyAsync on the device followed
        by a stream synchronize, so the wall time around it is the copy. None when the buffer cannot be allocated.
        """
        lib = self.lib
        n_bytes = mib * MIB
        ctx = lib.ggml_init(_InitParams(4 * lib.ggml_tensor_overhead(), None, True))
        if not ctx:
            return None
        try:
            src = lib.ggml_new_tensor_1d(ctx, GGML_TYPE_I8, n_bytes)
            dst = lib.ggml_new_tensor_1d(ctx, GGML_TYPE_I8, n_bytes)
            buffer = lib.ggml_backend_alloc_ctx_tensors_from_buft(ctx, lib.ggml_backend_dev_buffer_type(device))
            if not buffer:
                return None
            try:
                lib.ggml_backend_tensor_copy(src, dst)  # first touch
                best = float("inf")
                for _ in range(repeats):
                    start = time.perf_counter()
                    lib.ggml_backend_tensor_copy(src, dst)
                    best = min(best, time.perf_counter() - start)
            finally:
                lib.ggml_backend_buffer_free(buffer)
        finally:
            lib.ggml_free(ctx)
        return round(2 * n_bytes / best / 1e9, 1)


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _symbol_file(address: int | None) -> str:
    try:
        libc = ctypes.CDLL(None)
        info = _DlInfo()
        if address and libc.dladdr(ctypes.c_void_p(address), ctypes.byref(info)):
            return os.path.realpath(_text(info.dli_fname))
    except (OSError, AttributeError):
        pass
    return "unknown"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
