"""The server's side of the engine: loads it in the background (GET /health answers 503 until it
is ready), bounds the queue, and bridges each request's tokens from the engine thread to the event
loop without a thread per request (the engine calls `Job.notify` after each token and at the end).
"""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from ..api import open_engine, resolve_model
from ..batching import BatchEngine, Request, RequestHandle
from ..chat import CHATML_TEMPLATE
from ..tokenizer import Tokenizer
from .config import ServerConfig
from .errors import ApiError
from .metrics import Totals


class Job:
    """One submitted request, awaited from the event loop."""

    def __init__(self, backend: "Backend", loop: asyncio.AbstractEventLoop) -> None:
        self.backend, self.loop = backend, loop
        self.wake = asyncio.Event()
        self.settled = asyncio.Event()        # done, and counted in the metrics
        self.handle: RequestHandle | None = None
        self._counted = False

    def notify(self, h: RequestHandle) -> None:
        """Engine thread: never raises (an exception here would stop the engine)."""
        try:
            if h.done.is_set() and not self._counted:
                self._counted = True
                self.backend.finished(h)
                self.loop.call_soon_threadsafe(self.settled.set)
            self.loop.call_soon_threadsafe(self.wake.set)
        except Exception:       # the loop is closed: nobody is waiting any more
            pass

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    async def batches(self):
        """Yield (new token ids, their candidates) as the engine emits them, until the request ends."""
        h, seen = self.handle, 0
        assert h is not None
        while True:
            done = h.done.is_set()
            n = len(h.tokens)
            if n > seen:
                yield h.tokens[seen:n], h.cands[seen:n]
                seen = n
            elif done:
                return
            else:
                await self.wake.wait()
                self.wake.clear()

    async def finished(self) -> RequestHandle:
        """Wait for the end (after a cancel: the next engine step) and the metrics update."""
        await self.settled.wait()
        assert self.handle is not None
        return self.handle


class Backend:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.engine: BatchEngine | None = None
        self.tok: Tokenizer | None = None
        self.template = cfg.chat_template
        self.model_path = ""
        self.model_id = cfg.alias or ""
        self.error: Exception | None = None
        self.ready = threading.Event()
        self.totals = Totals()
        self.created = int(time.time())
        self._inflight = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ---- loading

    def load(self) -> None:
        """Open the model and start the engine thread (errors are kept for /health to report)."""
        try:
            path = resolve_model(self.cfg.model)
            self.model_path = path
            self.model_id = self.cfg.alias or Path(path).name
            spec = self.cfg.spec()
            spec.check()
            mtp, draft = spec.files(self.cfg.mtp_file)
            eng = open_engine(path, device=self.cfg.device or "auto", mtp=mtp,
                              n_parallel=self.cfg.n_parallel, n_ctx=self.cfg.n_ctx, spec=spec.types,
                              n_max=spec.n_max, prefill_chunk=self.cfg.prefill_chunk, progress=False,
                              check_tensors=self.cfg.check_tensors, draft=draft, device_draft=self.cfg.device_draft)
            self.tok = Tokenizer.from_gguf(eng.rn.gm)
            if self.template is None:
                self.template = self.tok.chat_template or CHATML_TEMPLATE
            eng.start()
            self.engine = eng
            self.ready.set()
        except Exception as e:
            self.error = e

    def start_loading(self) -> None:
        self._thread = threading.Thread(target=self.load, name="wgmtp-load", daemon=True)
        self._thread.start()

    def wait_loaded(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.stop()

    # ---- facts

    @property
    def n_ctx(self) -> int:
        assert self.engine is not None
        return self.engine.rn.n_ctx

    @property
    def mtp(self) -> bool:
        return bool(self.engine is not None and self.engine.rn.mtp)

    @property
    def speculative(self) -> bool:
        """Loaded with a drafter (draft-mtp or an n-gram one) and room for drafts."""
        return bool(self.engine is not None and self.engine.rn.n_max > 0 and self.cfg.spec().types)

    def names(self) -> set[str]:
        """Model names a request may give: the alias (or file name), the file's stem and its path."""
        p = Path(self.model_path)
        return {self.model_id, p.name, p.stem, self.model_path}

    # ---- requests

    def submit(self, req: Request) -> Job:
        """Queue `req`; 503 when every slot is busy and the queue holds max_queue requests already."""
        assert self.engine is not None
        bound = self.engine.n_parallel + self.cfg.max_queue
        with self._lock:
            if self._inflight >= bound:
                raise ApiError(503, f"server busy: {self._inflight} requests in flight ({self.engine.n_parallel} "
                                    f"slots + a queue of {self.cfg.max_queue}); retry later, or raise --max-queue")
            self._inflight += 1
        job = Job(self, asyncio.get_running_loop())
        req.notify = job.notify
        if self.cfg.observer is not None:
            req.observe = self.cfg.observer(req)
        try:
            job.handle = self.engine.submit(req)
        except Exception:
            with self._lock:
                self._inflight -= 1
            raise
        return job

    def finished(self, h: RequestHandle) -> None:
        """Engine thread, once per request at its end."""
        with self._lock:
            self._inflight -= 1
        self.totals.add(h.stats)
