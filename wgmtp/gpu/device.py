"""Adapter choice, device creation with the adapter's real limits and optional features, and the
kill switches that pin driver bugs down (README, "Run": WGMTP_DEVICE, WGMTP_BACKEND,
WGMTP_DISABLE_SUBGROUPS, WGMTP_DISABLE_F16, WGMTP_MAX_BINDING_BYTES).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
import wgpu  # noqa: E402

from ..errors import DeviceError  # noqa: E402
from . import ffi_types

BACKENDS = {"vulkan": "Vulkan", "gl": "OpenGL", "opengl": "OpenGL", "metal": "Metal", "dx12": "D3D12", "d3d12": "D3D12"}
_TYPE_RANK = {"DiscreteGPU": 0, "IntegratedGPU": 1, "VirtualGPU": 2, "Unknown": 3, "CPU": 4}
_BACKEND_RANK = {"Vulkan": 0, "Metal": 0, "D3D12": 1, "OpenGL": 2}
OPTIONAL_FEATURES = ("shader-f16", "subgroup", "timestamp-query", "timestamp-query-inside-passes", "immediates")
LIMIT_KEYS = (
    "max-storage-buffer-binding-size", "max-buffer-size", "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup", "max-compute-workgroup-size-x", "max-compute-workgroup-size-y",
    "max-compute-workgroup-size-z", "max-compute-workgroups-per-dimension", "max-storage-buffers-per-shader-stage",
    "max-uniform-buffer-binding-size", "max-bind-groups", "max-bindings-per-bind-group",
    "min-storage-buffer-offset-alignment", "min-uniform-buffer-offset-alignment", "max-immediate-size",
)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def kill_switches() -> dict[str, str]:
    """The WGMTP_* switches set in the environment (printed by `devices` and `check`)."""
    keys = ("WGMTP_DEVICE", "WGMTP_BACKEND", "WGMTP_DISABLE_SUBGROUPS", "WGMTP_DISABLE_F16",
            "WGMTP_MAX_BINDING_BYTES", "WGMTP_CHECK", "WGMTP_MATVEC", "WGMTP_FUSE", "WGMTP_NO_RUN_AHEAD")
    return {k: os.environ[k] for k in keys if os.environ.get(k)}


@dataclass
class AdapterDesc:
    index: int
    adapter: Any
    backend: str
    adapter_type: str
    vendor: str
    device: str
    driver: str
    features: set[str]
    limits: dict[str, int]

    @property
    def name(self) -> str:
        return f"{self.device} ({self.backend})"


def list_adapters() -> list[AdapterDesc]:
    """Every adapter wgpu finds, in a stable order: best first (discrete, integrated, ..., CPU)."""
    ffi_types.prewarm()     # before wgpu-py's first structs: seconds of cffi parsing saved
    try:
        raw = wgpu.gpu.enumerate_adapters_sync()
    except Exception as e:  # pragma: no cover - depends on the machine
        raise DeviceError(f"wgpu could not enumerate adapters ({e}); install a Vulkan driver "
                          f"(e.g. apt install mesa-vulkan-drivers)") from None
    out = []
    for a in raw:
        info = a.info
        lim = a.limits
        out.append(AdapterDesc(
            index=-1, adapter=a, backend=str(info.get("backend_type", "?")),
            adapter_type=str(info.get("adapter_type", "Unknown")), vendor=str(info.get("vendor", "")),
            device=str(info.get("device", "")), driver=str(info.get("description", "")),
            features=set(a.features), limits={k: int(lim[k]) for k in LIMIT_KEYS if k in lim}))
    out.sort(key=lambda d: (_TYPE_RANK.get(d.adapter_type, 3), _BACKEND_RANK.get(d.backend, 3)))
    for i, d in enumerate(out):
        d.index = i
    return out


def select_adapter(selector: str | int | None = None) -> AdapterDesc:
    """"auto"/None = the best adapter (WGMTP_DEVICE and WGMTP_BACKEND apply); an int = index in
    `wgmtp devices`; a string = case-insensitive substring of the name, vendor or backend."""
    adapters = list_adapters()
    want_backend = os.environ.get("WGMTP_BACKEND", "").strip().lower()
    if want_backend:
        if want_backend not in BACKENDS:
            raise DeviceError(f"WGMTP_BACKEND={want_backend!r} is not one of vulkan, gl, metal, dx12")
        adapters = [a for a in adapters if a.backend == BACKENDS[want_backend]]
    if selector in (None, "auto", ""):
        selector = os.environ.get("WGMTP_DEVICE") or None
    if not adapters:
        raise DeviceError("no WebGPU adapter found" + (f" for WGMTP_BACKEND={want_backend}" if want_backend else "")
                          + "; install a Vulkan driver (on a machine without a GPU: apt install mesa-vulkan-drivers)")
    if selector is None:
        return adapters[0]
    if isinstance(selector, int) or (isinstance(selector, str) and selector.strip().isdigit()):
        i = int(selector)
        for a in adapters:
            if a.index == i:
                return a
        raise DeviceError(f"--device {i}: no adapter with that index (see `wgmtp devices`: "
                          f"{', '.join(str(a.index) for a in adapters)})")
    s = str(selector).lower()
    for a in adapters:
        if s in f"{a.device} {a.vendor} {a.backend} {a.adapter_type}".lower():
            return a
    raise DeviceError(f"--device {selector!r} matches no adapter (have: "
                      f"{'; '.join(f'{a.index}: {a.name}' for a in adapters)})")


STAGING_RING = 4


@dataclass
class GPUContext:
    """A wgpu device on one adapter plus what kernels need to know about it."""
    desc: AdapterDesc
    device: Any
    subgroups: bool
    f16: bool
    max_binding: int                # bytes one storage binding may span (after WGMTP_MAX_BINDING_BYTES)
    limits: dict[str, int]
    features: set[str]
    label: str = ""
    matvec_rowwise: bool = False    # mat-vec layout: a row per thread (CPU adapters) or 4 rows per workgroup
    _staging: dict[int, list] = field(default_factory=dict)

    @property
    def queue(self):
        return self.device.queue

    @property
    def binding_limit(self) -> int:
        """The adapter's own storage-binding limit. `max_binding` (WGMTP_MAX_BINDING_BYTES) is the
        size weights and KV caches are split at; activations, workspaces and tables only need to
        fit this."""
        return int(self.limits.get("max-storage-buffer-binding-size", self.max_binding))

    @property
    def name(self) -> str:
        return self.desc.name

    def variant(self) -> str:
        return (f"{self.desc.backend.lower()}{'' if self.subgroups else '-nosg'}{'' if self.f16 else '-nof16'}"
                f"{'-rowwise' if self.matvec_rowwise and self.desc.adapter_type != 'CPU' else ''}"
                f"{'-tiled' if not self.matvec_rowwise and self.desc.adapter_type == 'CPU' else ''}")

    # ---- buffers

    def buffer(self, size: int, *, usage: int | None = None, label: str = "") -> Any:
        """A storage buffer (zero-initialised by WebGPU) of at least `size` bytes, 4-aligned."""
        U = wgpu.BufferUsage
        if usage is None:
            usage = U.STORAGE | U.COPY_DST | U.COPY_SRC
        size = max(16, (int(size) + 15) // 16 * 16)
        if size > self.limits.get("max-buffer-size", 1 << 62):
            raise DeviceError(f"buffer '{label}' of {size} bytes exceeds the adapter's max buffer size "
                              f"{self.limits['max-buffer-size']}")
        try:
            return self.device.create_buffer(size=size, usage=usage, label=label)
        except Exception as e:
            raise DeviceError(f"out of GPU memory allocating '{label}' ({size} bytes): {e}") from None

    def upload(self, data: np.ndarray | bytes | memoryview, *, label: str = "", usage: int | None = None) -> Any:
        """A buffer holding `data`. A C-contiguous array goes to the queue as it is (no host copy of
        its own: the write's staging copy is the only one); a size that is not a multiple of 4 is
        padded with zeros."""
        m = memoryview(np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data).cast("B")
        n = len(m)
        buf = self.buffer(n, usage=usage, label=label)
        if n >= 4:
            self.queue.write_buffer(buf, 0, m[: n // 4 * 4])
        if n % 4:
            self.queue.write_buffer(buf, n // 4 * 4, bytes(m[n // 4 * 4:]) + b"\0" * (-n % 4))
        return buf

    def staging(self, size: int) -> Any:
        """A MAP_READ buffer of at least `size` bytes, the least recently handed out of a ring of
        STAGING_RING per size class: the one staging scheme of reads and of submissions that read
        back (program.Runner). Safe while at most STAGING_RING - 2 submissions await collection
        (the runner keeps one queued step) and every `read` maps at once."""
        size = max(256, 1 << (int(size) - 1).bit_length())
        ring = self._staging.setdefault(size, [])
        if len(ring) < STAGING_RING:
            U = wgpu.BufferUsage
            ring.append(self.device.create_buffer(size=size, usage=U.MAP_READ | U.COPY_DST, label=f"staging{size}"))
        buf = ring.pop(0)
        ring.append(buf)
        return buf

    def read(self, buf: Any, offset: int = 0, size: int | None = None) -> bytes:
        """Copy a range of a GPU buffer to the host (one submission)."""
        size = buf.size - offset if size is None else size
        st = self.staging(size)
        enc = self.device.create_command_encoder()
        enc.copy_buffer_to_buffer(buf, offset, st, 0, (size + 3) // 4 * 4)
        self.queue.submit([enc.finish()])
        return map_read(st, size)

    def read_array(self, buf: Any, dtype, count: int, offset_elems: int = 0) -> np.ndarray:
        it = np.dtype(dtype).itemsize
        return np.frombuffer(self.read(buf, offset_elems * it, count * it), dtype=dtype).copy()


class _DoneToken:
    def set_done(self) -> None: ...
    def is_done(self) -> bool: return True


class _CallerPolls:
    """Stands in for wgpu-py's background poll thread: we poll on the calling thread instead.
    On the OpenGL backend the thread races the main thread for the EGL context and aborts the
    process (wgpu-hal gles/egl.rs 'AdapterContext::lock ... BadAccess'); one polling thread is
    also simpler to reason about everywhere."""
    def get_token(self) -> _DoneToken: return _DoneToken()
    def stop(self) -> None: ...


def _own_polling(device: Any) -> None:
    poller = getattr(device, "_poller", None)
    if poller is not None and not isinstance(poller, _CallerPolls):
        poller.stop()
        device._poller = _CallerPolls()


def map_read(staging: Any, size: int) -> bytes:
    """Map a staging buffer, polling the device on this thread until the map completes."""
    dev = staging._device
    promise = staging.map_async(wgpu.MapMode.READ, 0, staging.size)
    while promise._state == "pending":
        dev._poll(True)
    promise.sync_wait()
    try:
        return bytes(staging.read_mapped(0, (size + 3) // 4 * 4))[:size]
    finally:
        staging.unmap()


_contexts: dict[tuple, GPUContext] = {}


def open_context(selector: str | int | None = None, *, subgroups: bool | None = None, f16: bool | None = None,
                 max_binding: int | None = None, matvec: str | None = None) -> GPUContext:
    """A device on the selected adapter, requesting its optional features and real limits.

    `subgroups`/`f16` None = use when the adapter has them unless WGMTP_DISABLE_* says no;
    False forces the fallback paths (tests run both). Contexts are cached per choice.
    """
    desc = select_adapter(selector)
    has_sg = "subgroup" in desc.features
    has_f16 = "shader-f16" in desc.features
    sg = has_sg and not env_flag("WGMTP_DISABLE_SUBGROUPS") if subgroups is None else (subgroups and has_sg)
    h = has_f16 and not env_flag("WGMTP_DISABLE_F16") if f16 is None else (f16 and has_f16)
    lim_bind = desc.limits.get("max-storage-buffer-binding-size", 128 << 20)
    env_mb = os.environ.get("WGMTP_MAX_BINDING_BYTES")
    if max_binding is None and env_mb:
        try:
            max_binding = int(env_mb)
        except ValueError:
            raise DeviceError(f"WGMTP_MAX_BINDING_BYTES={env_mb!r} is not a number of bytes") from None
        if max_binding < 256:
            raise DeviceError(f"WGMTP_MAX_BINDING_BYTES={env_mb!r}: give at least 256 bytes (or unset it for the "
                              "adapter's own limit)")
    mb = min(lim_bind, max_binding) if max_binding else lim_bind
    mb = max(256, mb // 256 * 256)
    layout = (matvec or os.environ.get("WGMTP_MATVEC", "").strip().lower()
              or ("rowwise" if desc.adapter_type == "CPU" else "tiled"))
    if layout not in ("rowwise", "tiled"):
        raise DeviceError(f"WGMTP_MATVEC={layout!r}: use rowwise or tiled")
    key = (desc.index, desc.backend, desc.device, sg, h, mb, layout)
    ctx = _contexts.get(key)
    if ctx is not None:
        return ctx
    feats = [f for f in OPTIONAL_FEATURES if f in desc.features
             and not (f == "subgroup" and not sg) and not (f == "shader-f16" and not h)]
    limits = {k: v for k, v in desc.limits.items() if not k.startswith("min-")}
    try:
        dev = desc.adapter.request_device_sync(required_features=feats, required_limits=limits,
                                                label=f"wgmtp:{desc.name}")
    except Exception as e:
        raise DeviceError(f"could not open a device on {desc.name}: {e}") from None
    _own_polling(dev)
    ctx = GPUContext(desc=desc, device=dev, subgroups=sg, f16=h, max_binding=mb,
                     limits=dict(desc.limits), features=set(feats), label=desc.name,
                     matvec_rowwise=layout == "rowwise")
    _contexts[key] = ctx
    return ctx
