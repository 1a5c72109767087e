"""A stand-in for the pynvml module that replays a power trace in NVML's shape, for the energy code without a GPU.

The trace is the shape NVML reports, not a measurement of any GPU: power in milliwatts read at any time, and a total
energy counter in millijoules that advances in COUNTER_STEP_S steps (the counter's steps are why a window must be long).
Time runs from the stand-in's creation, on the real clock, so the bench's sampler thread and windows meet it as they
would meet a GPU. Power is read two ways, as on a recent board: the instant power field (nvmlDeviceGetFieldValues) and
nvmlDeviceGetPowerUsage, which may answer a trailing average over `average_s` (1 s on Ampere, except GA100, and newer).
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_FI_DEV_POWER_INSTANT = 186  # pynvml's numbers, so the bench reads the stand-in as it reads the module

COUNTER_STEP_S = 0.025  # the counter advances in steps of this length
RIPPLE_HZ = 3.0


class RecordedNvml:
    """pynvml's calls the bench makes, answering from a trace: `idle_w` until `load_from_s`, then `load_w` with a
    ±`ripple` fraction at RIPPLE_HZ (idle before time 0 too). counter_scale: a counter that reads that many times the
    trace's energy; counter=False: a GPU without one (before Volta). average_s: GetPowerUsage answers the trailing
    average over that many seconds (0: the instant power); instant_field=False: a driver without the instant field."""

    NVMLError = NVMLError
    NVML_SUCCESS = NVML_SUCCESS
    NVML_VALUE_TYPE_UNSIGNED_INT = NVML_VALUE_TYPE_UNSIGNED_INT
    NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT

    def __init__(self, load_w: float = 350.0, idle_w: float = 62.0, load_from_s: float = 0.0, ripple: float = 0.05,
                 limit_w: float = 700.0, counter_scale: float = 1.0, counter: bool = True, average_s: float = 0.0,
                 instant_field: bool = True) -> None:
        self.load_w, self.idle_w, self.load_from_s, self.ripple = load_w, idle_w, load_from_s, ripple
        self.limit_w, self.counter_scale, self.counter = limit_w, counter_scale, counter
        self.average_s, self.instant_field = average_s, instant_field
        self.t0 = time.perf_counter()

    def _now(self) -> float:
        return time.perf_counter() - self.t0

    def _power_w(self, t: float) -> float:
        if t < self.load_from_s:
            return self.idle_w
        return self.load_w * (1 + self.ripple * math.sin(2 * math.pi * RIPPLE_HZ * t))

    def _energy_j(self, t: float) -> float:
        """The trace's energy from 0 to t (negative before 0), in closed form."""
        idle = self.idle_w * min(t, self.load_from_s)
        if t <= self.load_from_s:
            return idle
        w = 2 * math.pi * RIPPLE_HZ
        ripple = self.load_w * self.ripple / w * (math.cos(w * self.load_from_s) - math.cos(w * t))
        return idle + self.load_w * (t - self.load_from_s) + ripple

    # pynvml's functions
    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        t = self._now()
        if not self.average_s:
            return round(self._power_w(t) * 1000)
        return round((self._energy_j(t) - self._energy_j(t - self.average_s)) / self.average_s * 1000)

    def nvmlDeviceGetFieldValues(self, handle: str, field_ids: list[int]) -> list[SimpleNamespace]:
        """pynvml's c_nvmlFieldValue_t, as far as the bench reads it: the instant power, or NotSupported per field."""
        def value(field_id: int) -> SimpleNamespace:
            if field_id != NVML_FI_DEV_POWER_INSTANT or not self.instant_field:
                return SimpleNamespace(fieldId=field_id, nvmlReturn=NVML_ERROR_NOT_SUPPORTED, valueType=0,
                                       value=SimpleNamespace(uiVal=0))
            return SimpleNamespace(fieldId=field_id, nvmlReturn=NVML_SUCCESS, valueType=NVML_VALUE_TYPE_UNSIGNED_INT,
                                   value=SimpleNamespace(uiVal=round(self._power_w(self._now()) * 1000)))
        return [value(field_id) for field_id in field_ids]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if not self.counter:
            raise NVMLError_NotSupported("Not Supported")
        stepped = math.floor(self._now() / COUNTER_STEP_S) * COUNTER_STEP_S
        return round(self._energy_j(stepped) * 1000 * self.counter_scale)

    def nvmlDeviceGetPowerManagementLimit(self, handle: str) -> int:
        return round(self.limit_w * 1000)
