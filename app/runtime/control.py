"""Model control: load, reload and unload models while the server runs (Triton's repository API and poll mode).

A new version loads and warms up beside the serving one (its own sessions, batchers and inference thread),
then takes traffic in one step: the repository's handle and the model's task object are swapped with no
await between them. Requests that took the old version (ModelHandle.in_use) finish on it; it is closed once
idle, or `drain_s` later. A version that fails to load leaves the serving one in place and is reported as the
model's `update`. A model unloaded through the API stays unloaded (the watch too leaves it) until loaded again.

Task-agnostic: `build` turns a loaded handle into whatever object serves it (app/tasks/registry.py's task).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from app.runtime.repository import (
    FAILED,
    LOADING,
    READY,
    UNLOADED,
    ModelHandle,
    ModelRepository,
    Signature,
    version_folders,
)

log = logging.getLogger(__name__)

TRITON_STATES = {READY: "READY", LOADING: "LOADING", FAILED: "UNAVAILABLE", UNLOADED: "UNAVAILABLE"}


class ControlError(Exception):
    """A load or unload that could not be done; the message says why (and which version still serves)."""


@dataclass
class Update:
    """A version of a model that is not serving: still loading beside the serving one, or failed to load."""

    version: str | None
    state: str  # LOADING or FAILED
    error: str | None = None

    def describe(self) -> dict:
        return asdict(self)


class ModelControl:
    def __init__(self, repo: ModelRepository, build: Callable[[ModelHandle], object], tasks: dict,
                 drain_s: float = 30.0):
        """`tasks`: model name -> the object `build` made for its serving handle (swapped with the handle)."""
        self.repo, self.build, self.tasks, self.drain_s = repo, build, tasks, drain_s
        self.updates: dict[str, Update] = {}
        self.unloaded: set[str] = set()  # unloaded through the API: the watch does not bring them back
        self.tried: dict[str, Signature] = {}  # the files a failed load read: not tried again until they change
        self._locks: dict[str, asyncio.Lock] = {}
        self._retiring: dict[asyncio.Task, ModelHandle] = {}

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _exists(self, name: str) -> bool:
        return name in self.repo.names()  # a folder of the repository, never a path out of it ("..")

    # -- load ---------------------------------------------------------------------------------------

    async def load_all(self) -> None:
        """Startup: every model of the repository, each in its own thread, each failure kept to its model."""
        names = self.repo.discover()  # every model reads "loading" at once, before any finishes
        await asyncio.gather(*(self._load_quietly(h.name) for h in names))

    async def load(self, name: str) -> ModelHandle:
        """Load, or reload, the highest version of models/<name> (the repository API). ControlError says why
        it failed and which version still serves."""
        if not self._exists(name):
            raise ControlError(f"no model {name!r} in the repository {self.repo.root} (no {name}/model.json)")
        async with self._lock(name):
            self.unloaded.discard(name)
            return await self._load(name)

    async def _load_quietly(self, name: str) -> bool:
        async with self._lock(name):
            try:
                await self._load(name)
                return True
            except ControlError:  # logged and reported by _load
                return False

    async def _load(self, name: str) -> ModelHandle:
        for result in ("success", "failure"):  # both series exist from the first load, for rates and alerts
            self.repo.metrics.model_loads.labels(name, result)
        old = self.repo.models.get(name)
        serving = old if old is not None and old.state == READY else None
        signature = self.repo.signature(name)
        handle = self.repo.read(name)
        if serving is not None:
            self.updates[name] = Update(handle.version, LOADING)
        else:
            self.repo.models[name] = handle  # /readyz and /v1/models show it loading
            self.repo.metrics.model_ready.labels(name).set(0)
        try:
            task = await asyncio.to_thread(self._open, handle)
        except Exception as exc:  # noqa: BLE001 - the model's failure, reported; the server goes on
            raise self._failed(handle, serving, signature, f"{type(exc).__name__}: {exc}") from None
        self.repo.start(handle)
        self.repo.models[name], self.tasks[name] = handle, task  # the swap: one step, no await in between
        self.updates.pop(name, None)
        self.tried.pop(name, None)
        self.repo.metrics.model_loads.labels(name, "success").inc()
        log.info("model %s version %s ready (%s) in %.2fs%s", name, handle.version, handle.providers,
                 handle.load_seconds, f", replacing version {serving.version}" if serving else "")
        if old is not None:
            self._retire(old)
        return handle

    def _open(self, handle: ModelHandle) -> object:
        """Sessions, warm-up and the task object (blocking: runs in a thread); nothing stays open on failure."""
        self.repo.open(handle)
        try:
            return self.build(handle)
        except BaseException:
            handle.executor.shutdown(wait=False, cancel_futures=True)
            raise

    def _failed(self, handle: ModelHandle, serving: ModelHandle | None, signature: Signature,
                error: str) -> ControlError:
        """Record and report a failed load; the error to raise."""
        name = handle.name
        self.tried[name] = signature
        self.repo.metrics.model_loads.labels(name, "failure").inc()
        message = f"model {name} version {handle.version} failed to load: {error}"
        if serving is not None:
            self.updates[name] = Update(handle.version, FAILED, error)
            message += f"; version {serving.version} still serves"
        else:
            self.repo.mark_failed(handle, error)
        log.error("%s", message)
        return ControlError(message)

    # -- unload -------------------------------------------------------------------------------------

    async def unload(self, name: str) -> None:
        """Take a model out of service (its requests answer 503) until it is loaded again."""
        if name not in self.repo.models and not self._exists(name):
            raise ControlError(f"no model {name!r} in the repository {self.repo.root}")
        async with self._lock(name):
            old = self.repo.models.get(name) or self.repo.read(name)
            self.unloaded.add(name)
            self.updates.pop(name, None)
            # Keeps the config, so its routes still find it and answer "model <name> is unloaded".
            self.repo.models[name] = ModelHandle(name, old.config, old.config_path, old.version, state=UNLOADED)
            self.tasks.pop(name, None)
            self.repo.metrics.model_ready.labels(name).set(0)
            self._retire(old)
            log.info("model %s unloaded", name)

    async def _remove(self, name: str) -> None:
        """Its folder is gone: forget the model."""
        old = self.repo.models.pop(name, None)
        self.tasks.pop(name, None)
        self.updates.pop(name, None)
        self.tried.pop(name, None)
        self.unloaded.discard(name)
        with contextlib.suppress(KeyError):
            self.repo.metrics.model_ready.remove(name)
        if old is not None:
            self._retire(old)
        log.info("model %s removed from the repository: unloaded", name)

    def _retire(self, old: ModelHandle) -> None:
        task = asyncio.create_task(self._close_when_idle(old), name=f"retire-{old.name}-{old.version}")
        self._retiring[task] = old
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def _close_when_idle(self, old: ModelHandle) -> None:
        try:
            await asyncio.wait_for(old.idle.wait(), self.drain_s)
        except TimeoutError:
            log.warning("model %s version %s: %d requests still running after %.0fs; closing it anyway",
                        old.name, old.version, old.in_use, self.drain_s)
        await self.repo.close(old)
        if old.stages:
            log.info("model %s version %s closed", old.name, old.version)

    # -- watch (poll mode) --------------------------------------------------------------------------

    def _wants_load(self, name: str) -> bool:
        if name in self.unloaded:
            return False
        signature = self.repo.signature(name)
        if self.tried.get(name) == signature:  # failed on these very files: wait until they change
            return False
        handle = self.repo.models.get(name)
        update = self.updates.get(name)
        if handle is None or handle.state == FAILED:
            return True
        if handle.state != READY or (update is not None and update.state == LOADING):
            return False
        return handle.version != signature.version  # a new version folder, or the serving one removed

    async def poll_once(self) -> list[tuple[str, str]]:
        """One look at the repository: load new models and new versions, retry a failed version whose files
        changed, unload models whose folder is gone. Returns what it did: (model, loaded|failed|removed)."""
        on_disk = set(self.repo.names())
        done = []
        for name in sorted(set(self.repo.models) - on_disk):
            async with self._lock(name):
                if name in self.repo.models and not self._exists(name):
                    await self._remove(name)
                    done.append((name, "removed"))

        async def load(name: str) -> None:
            async with self._lock(name):
                if self._wants_load(name):
                    try:
                        await self._load(name)
                        done.append((name, "loaded"))
                    except ControlError:
                        done.append((name, "failed"))

        await asyncio.gather(*(load(name) for name in sorted(on_disk)))
        return sorted(done)

    async def watch(self, interval_s: float) -> None:
        """Poll the repository every `interval_s` seconds (serve --watch) until cancelled."""
        log.info("watching %s every %.1fs for new models and versions", self.repo.root, interval_s)
        while True:
            await asyncio.sleep(interval_s)
            try:
                for name, action in await self.poll_once():
                    log.info("watch: model %s %s", name, action)
            except Exception:  # noqa: BLE001 - a bad poll (a folder vanishing mid-scan) must not end the watch
                log.exception("watch: poll of %s failed", self.repo.root)

    # -- report -------------------------------------------------------------------------------------

    def index(self, ready_only: bool = False) -> list[dict]:
        """Triton's repository index: every model folder, loaded or not, and any version loading or failed
        beside the serving one. States READY, LOADING, UNAVAILABLE; the reason says why not ready."""
        entries = []
        for name in sorted(set(self.repo.names()) | set(self.repo.models)):
            handle = self.repo.models.get(name)
            if handle is None:
                versions = version_folders(self.repo.root / name)
                entries.append(_entry(name, versions[-1].name if versions else None, "UNAVAILABLE", "not loaded"))
                continue
            reason = handle.error or ("unloaded" if handle.state == UNLOADED else "")
            entries.append(_entry(name, handle.version, TRITON_STATES[handle.state], reason))
            if (update := self.updates.get(name)) is not None:
                entries.append(_entry(name, update.version, TRITON_STATES[update.state], update.error or ""))
        return [e for e in entries if e["state"] == "READY"] if ready_only else entries

    def failed_updates(self) -> dict[str, dict]:
        return {name: {"version": u.version, "error": u.error} for name, u in self.updates.items()
                if u.state == FAILED}

    async def stop(self) -> None:
        """Shutdown: close the versions still draining (the repository closes the serving ones)."""
        for task, handle in list(self._retiring.items()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not handle.closed.is_set():
                await self.repo.close(handle)


def _entry(name: str, version: str | None, state: str, reason: str) -> dict:
    entry = {"name": name, "version": version, "state": state, "reason": reason}
    if version is None:  # optional in the protocol: left out when there is none, as Triton does
        del entry["version"]
    return entry
