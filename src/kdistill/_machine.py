"""What machine and which versions a result came from (stored in every summary.json)."""

from __future__ import annotations

import os
import platform
from importlib import metadata

__all__ = ["machine_info", "versions", "memory_bytes", "check_memory", "format_bytes", "process_seconds",
           "usable_cores"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_info() -> dict:
    """CPU model, usable cores, memory, JAX backend and devices."""
    import jax

    cores = usable_cores()
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "memory_gib": mem,
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "x64": bool(jax.config.jax_enable_x64),
    }


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("kdistill", "jax", "jaxlib", "numpy", "scipy", "scikit-learn", "optax"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def process_seconds() -> float | None:
    """Wall-clock seconds since this process started (interpreter start included), from ``/proc``; ``None``
    where that cannot be read (not Linux)."""
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def memory_bytes() -> int | None:
    """Memory a new allocation can count on: MemAvailable (Linux) or else physical memory, capped by the
    cgroup limit when one is set; ``None`` where none can be read."""
    have: int | None = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    have = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if have is None:
        try:
            have = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            have = None
    for cgroup in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(cgroup) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > 0:
            have = int(text) if have is None else min(have, int(text))
    return have if have is None or have > 0 else None


def format_bytes(n: float) -> str:
    """``1000 -> "1000 bytes"``, ``1536 -> "1.5 KiB"``, ``4 * 2**30 -> "4 GiB"``."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def device_memory_bytes() -> int | None:
    """Free memory of JAX's default device when it is an accelerator (GPU/TPU: its own memory, where arrays
    live), from the device's ``memory_stats``; ``None`` on a CPU (host memory: :func:`memory_bytes`) or where
    the backend reports nothing."""
    import jax

    if jax.default_backend() == "cpu":
        return None
    try:
        stats = jax.devices()[0].memory_stats() or {}
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError):
        return None


def check_memory(need: int, what: str, instead: str) -> None:
    """Refuse, before allocating, work whose estimated peak memory ``need`` (bytes) exceeds what this
    machine has free (on a GPU: what the device has free, where the arrays live): one line with the
    estimate, what needs it and what to do ``instead``."""
    from .errors import InvalidInputError

    device = device_memory_bytes()
    if device is not None and need > device:
        raise InvalidInputError(f"{what} needs about {format_bytes(need)} of memory and the accelerator has "
                                f"{format_bytes(device)} free; {instead}")
    have = memory_bytes()
    if have is not None and need > have:
        raise InvalidInputError(f"{what} needs about {format_bytes(need)} of memory and this machine has "
                                f"{format_bytes(have)} free; {instead}")


def auto_precision(method_precision: str) -> str:
    """What a run's precision ``"auto"`` means here: the method's own on a CPU, float32 on an accelerator
    (a GPU's float64 runs at a small fraction of its float32 rate; ridge solves stay float64 anyway)."""
    import jax

    return method_precision if jax.default_backend() == "cpu" else "float32"
