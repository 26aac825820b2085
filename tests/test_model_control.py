"""Model control on copies of the shipped models: Triton's repository API, live reloads under load, failed
versions, unload, and the watch (poll mode). The app runs with its lifespan in the test's event loop and is
driven through httpx's ASGI transport, so requests, batches and the reload really run concurrently."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from app.api.app import create_app
from app.cli import build_parser
from app.settings import Settings

MODELS = Path(__file__).resolve().parent.parent / "models"
TEXTS = ["《星河彼岸》是作家林远舟创作的一部长篇小说", "电影《青石巷》由陈默执导，王小川、李青主演",
         "《夜航船》是歌手周晓岚演唱的一首歌曲，收录在专辑《远方》中", "周杰伦出生于台湾"]


def link_tree(source: Path, target: Path, skip: tuple[str, ...] = ()) -> None:
    """Copy a folder as hard links where the filesystem allows (the shipped files are never written through)."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, ignore=lambda _, names: [n for n in names if n in skip])


def repository(tmp_path: Path, *names: str) -> Path:
    """A model repository holding version 1 of each shipped model named."""
    root = tmp_path / "models"
    for name in names:
        (root / name).mkdir(parents=True)
        shutil.copy(MODELS / name / "model.json", root / name / "model.json")
        link_tree(MODELS / name / "1", root / name / "1")
    return root


def add_version(root: Path, name: str, version: int, broken: bool = False) -> Path:
    """Version `version` of a model: the shipped files, or with a corrupt subject.onnx (written as a new file)."""
    folder = root / name / str(version)
    link_tree(MODELS / name / "1", folder, skip=("subject.onnx",) if broken else ())
    if broken:
        (folder / "subject.onnx").write_bytes(b"\x08\x07 not an onnx graph")
    return folder


def repair(folder: Path) -> None:
    """Finish a version that was broken: its subject.onnx becomes the real one (a new file: size and mtime change)."""
    (folder / "subject.onnx").unlink()
    shutil.copy2(MODELS / "extract" / "1" / "subject.onnx", folder / "subject.onnx")


async def until(condition, seconds: float = 60.0) -> None:
    """Wait for an (async) condition to hold, checking between other work; fail if it never does."""
    async def wait() -> None:
        while not await condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), seconds)


@asynccontextmanager
async def serving(root: Path, **settings):
    """The app with its lifespan, every model loaded (or failed), and a client on it."""
    app = create_app(Settings(models=root, intra_op_threads=1, **settings))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://zhserve") as client:
            async def loaded() -> bool:
                models = (await client.get("/readyz")).json()["models"]
                return bool(models) and "loading" not in models.values()

            await until(loaded)
            yield app, client


async def index(client: httpx.AsyncClient, body: bytes = b"") -> list[dict]:
    r = await client.post("/v2/repository/index", content=body)  # tritonclient sends no body, no content type
    assert r.status_code == 200
    return r.json()


async def extract_version(client: httpx.AsyncClient) -> str:
    r = await client.post("/extract", json={"text": TEXTS[0]})
    assert r.status_code == 200, r.text
    return r.json()["version"]


async def metric(client: httpx.AsyncClient, line: str) -> float | None:
    for row in (await client.get("/metrics")).text.splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return None


def assert_closed(handle) -> None:
    assert handle.closed.is_set() and handle.state == "unloaded" and handle.in_use == 0
    assert all(b._worker is None for b in handle.stages.values())  # batchers stopped
    assert handle.executor._shutdown  # the inference thread is gone


async def test_reload_under_load_switches_versions_without_a_failed_request(tmp_path):
    root = repository(tmp_path, "extract")
    async with serving(root) as (app, client):
        v1 = app.state.repository.models["extract"]
        add_version(root, "extract", 2)
        clock = itertools.count()  # orders sends and receives across the clients
        log: list[tuple[int, int, int, str | None]] = []  # (sent, received, status, version)
        warmed, reloaded = asyncio.Event(), asyncio.Event()

        async def client_loop(k: int) -> None:
            seen_v2 = 0
            for i in range(150):  # a bound: ends well before, once this client has seen version 2 a few times
                sent = next(clock)
                r = await client.post("/extract", json={"texts": [TEXTS[(k + i) % len(TEXTS)]]})
                log.append((sent, next(clock), r.status_code, r.json().get("version")))
                if len(log) >= 12:
                    warmed.set()
                seen_v2 += r.json().get("version") == "2"
                if reloaded.is_set() and seen_v2 >= 5:
                    return

        async def reload() -> None:
            await warmed.wait()
            r = await client.post("/v2/repository/models/extract/load", content=b"{}")
            assert r.status_code == 200 and r.content == b""
            reloaded.set()

        await asyncio.gather(reload(), *(client_loop(k) for k in range(4)))

        assert [e for e in log if e[2] != 200] == []
        assert {e[3] for e in log} == {"1", "2"}
        first_v2 = min(received for _, received, _, version in log if version == "2")
        late_v1 = [e for e in log if e[0] > first_v2 and e[3] == "1"]
        assert late_v1 == [], "a request sent after version 2 answered was served by version 1"
        await asyncio.wait_for(v1.closed.wait(), 30)
        assert_closed(v1)
        v2 = app.state.repository.models["extract"]
        assert v2.version == "2" and v2.state == "ready" and not v2.closed.is_set()
        assert await extract_version(client) == "2"
        assert await metric(client, 'zhserve_model_loads_total{model="extract",result="success"}') == 2.0
        assert await metric(client, 'zhserve_model_loads_total{model="extract",result="failure"}') == 0.0


async def test_the_old_version_serves_its_requests_until_the_last_ends_or_the_drain_deadline(tmp_path):
    root = repository(tmp_path, "extract")
    async with serving(root, request_timeout_s=0.5) as (app, client):  # drain deadline: 1.5 s
        v1, v1_task = app.state.repository.models["extract"], app.state.tasks["extract"]
        add_version(root, "extract", 2)
        with v1.using():  # a request that started on version 1 and is still running
            await app.state.control.load("extract")
            assert await extract_version(client) == "2"
            for _ in range(50):  # let the retiring task run as far as it can
                await asyncio.sleep(0)
            assert not v1.closed.is_set()
            # the running request goes on on version 1: its batchers and inference thread still work
            assert v1_task.model is v1 and (await v1_task.extract([TEXTS[0]], time.monotonic() + 5))[0]
        await asyncio.wait_for(v1.closed.wait(), 30)  # closed once that request ended
        assert_closed(v1)

        v2 = app.state.repository.models["extract"]
        add_version(root, "extract", 3)
        v2.in_use += 1  # a request that never ends: the drain deadline closes the version anyway
        v2.idle.clear()
        await app.state.control.load("extract")
        await asyncio.wait_for(v2.closed.wait(), 30)
        assert v2.state == "unloaded" and all(b._worker is None for b in v2.stages.values())
        assert await extract_version(client) == "3"


async def test_a_broken_version_leaves_the_old_one_serving_and_is_reported(tmp_path):
    root = repository(tmp_path, "extract")
    async with serving(root) as (_, client):
        broken = add_version(root, "extract", 2, broken=True)
        r = await client.post("/v2/repository/models/extract/load")
        assert r.status_code == 400
        error = r.json()["error"]
        assert "extract version 2 failed to load" in error and "version 1 still serves" in error, error
        assert await extract_version(client) == "1"

        (model,) = (await client.get("/v1/models")).json()["models"]
        assert model["version"] == "1" and model["state"] == "ready"
        assert model["update"]["version"] == "2" and model["update"]["state"] == "failed"
        assert "subject.onnx" in model["update"]["error"]
        r = await client.get("/readyz")
        assert r.status_code == 200  # version 1 serves
        assert r.json()["failed_updates"] == {"extract": {"version": "2", "error": model["update"]["error"]}}
        assert await metric(client, 'zhserve_model_loads_total{model="extract",result="failure"}') == 1.0
        assert await metric(client, 'zhserve_model_ready{model="extract"}') == 1.0
        entries = await index(client)
        assert entries[0] == {"name": "extract", "version": "1", "state": "READY", "reason": ""}
        assert entries[1]["version"] == "2" and entries[1]["state"] == "UNAVAILABLE" and entries[1]["reason"]

        repair(broken)
        r = await client.post("/v2/repository/models/extract/load")
        assert r.status_code == 200
        assert await extract_version(client) == "2"
        assert (await client.get("/readyz")).json()["failed_updates"] == {}
        assert (await client.get("/v1/models")).json()["models"][0]["update"] is None


async def test_unload_answers_503_for_that_model_only_until_it_is_loaded(tmp_path):
    root = repository(tmp_path, "extract", "qa")
    qa = {"question": "《夜航船》是谁演唱的？", "passage": "《夜航船》是歌手周晓岚演唱的一首歌曲"}
    async with serving(root) as (app, client):
        v1 = app.state.repository.models["extract"]
        r = await client.post("/v2/repository/models/extract/unload",
                              content=b'{"parameters": {"unload_dependents": false}}')  # what tritonclient sends
        assert r.status_code == 200 and r.content == b""
        r = await client.post("/extract", json={"text": TEXTS[0]})
        assert r.status_code == 503 and r.json()["error"]["type"] == "unavailable"
        assert "unloaded" in r.json()["error"]["message"]
        assert (await client.post("/qa", json=qa)).status_code == 200
        r = await client.post("/v2/models/extract.subject/infer", json={
            "inputs": [{"name": "token_ids", "shape": [1, 2], "datatype": "INT64", "data": [5, 6]}]})
        assert r.status_code == 503 and "unloaded" in r.json()["error"]
        assert {e["name"]: (e["state"], e["reason"]) for e in await index(client)} == {
            "extract": ("UNAVAILABLE", "unloaded"), "qa": ("READY", "")}
        assert [e["name"] for e in await index(client, b'{"ready": true}')] == ["qa"]
        r = await client.post("/v2/repository/index", content=b'{"ready": true}',  # as `curl -d` sends it
                              headers={"content-type": "application/x-www-form-urlencoded"})
        assert [e["name"] for e in r.json()] == ["qa"]
        await asyncio.wait_for(v1.closed.wait(), 30)
        assert_closed(v1)
        # qa serves; extract was unloaded on purpose, so the server stays ready
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/v2/health/ready")).json() == {"ready": True}
        assert (await client.get("/v2/models/extract.subject/ready")).json()["ready"] is False

        assert (await client.post("/v2/repository/models/extract/load")).status_code == 200
        assert await extract_version(client) == "1"
        assert [e["name"] for e in await index(client, b'{"ready": true}')] == ["extract", "qa"]


@pytest.mark.parametrize("path, body", [
    ("/v2/repository/models/nope/load", b""),
    ("/v2/repository/models/nope/unload", b""),
    ("/v2/repository/models/%2E%2E/load", b""),
    ("/v2/repository/models/extract/load", b'{"parameters": {"config": "{}"}}'),
    ("/v2/repository/index", b'{"ready": "yes"}'),
    ("/v2/repository/index", b"[1"),
])
async def test_bad_repository_requests_are_400_with_the_protocol_error(tmp_path, path, body):
    root = repository(tmp_path, "extract")
    async with serving(root) as (_, client):
        r = await client.post(path, content=body)
        assert r.status_code in (400, 404), r.text
        assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str)
        if "nope" in path or "config" in body.decode():
            assert r.status_code == 400
        assert await extract_version(client) == "1"


async def test_watch_loads_new_versions_retries_a_broken_one_only_once_changed_and_unloads_removed(tmp_path):
    root = repository(tmp_path, "extract")
    async with serving(root) as (app, client):
        control = app.state.control
        failures = 'zhserve_model_loads_total{model="extract",result="failure"}'
        assert await control.poll_once() == []

        add_version(root, "extract", 2)
        assert await control.poll_once() == [("extract", "loaded")]
        assert await extract_version(client) == "2"

        broken = add_version(root, "extract", 3, broken=True)  # a copy still in progress looks like this
        assert await control.poll_once() == [("extract", "failed")]
        assert await control.poll_once() == []  # the same files: not tried again
        assert await metric(client, failures) == 1.0
        assert await extract_version(client) == "2"
        assert (await client.get("/readyz")).json()["failed_updates"]["extract"]["version"] == "3"

        repair(broken)  # the copy completes
        assert await control.poll_once() == [("extract", "loaded")]
        assert await extract_version(client) == "3"
        assert await metric(client, failures) == 1.0

        (root / "other").mkdir()  # a new model folder
        shutil.copy(MODELS / "extract" / "model.json", root / "other" / "model.json")
        link_tree(MODELS / "extract" / "1", root / "other" / "1")
        assert await control.poll_once() == [("other", "loaded")]
        other = app.state.repository.models["other"]
        assert other.state == "ready"

        assert (await client.post("/v2/repository/models/extract/unload")).status_code == 200
        add_version(root, "extract", 4)
        assert await control.poll_once() == []  # unloaded through the API: the watch leaves it so
        assert app.state.repository.models["extract"].state == "unloaded"

        shutil.rmtree(root / "other")
        assert await control.poll_once() == [("other", "removed")]
        await asyncio.wait_for(other.closed.wait(), 30)
        assert_closed(other)
        assert "other" not in {m["name"] for m in (await client.get("/v1/models")).json()["models"]}
        assert "other" not in {e["name"] for e in await index(client)}


async def test_serve_watch_polls_in_the_background(tmp_path):
    root = repository(tmp_path, "extract")
    async with serving(root, watch=True, watch_interval_s=0.05) as (_, client):
        assert await extract_version(client) == "1"
        add_version(root, "extract", 2)

        async def swapped() -> bool:
            return (await client.get("/v1/models")).json()["models"][0]["version"] == "2"

        await until(swapped)
        assert await extract_version(client) == "2"


def test_serve_takes_watch_and_keeps_its_contract():
    parser = build_parser()
    args = parser.parse_args(["serve", "--models", "m", "--host", "h", "--port", "1", "--watch"])
    assert (args.models, args.host, args.port, args.watch) == ("m", "h", 1, True)
    assert parser.parse_args(["serve"]).watch is None  # unset: the setting (ZHSERVE_WATCH) decides


def test_watch_setting_from_the_environment(monkeypatch):
    monkeypatch.setenv("ZHSERVE_WATCH", "1")
    monkeypatch.setenv("ZHSERVE_WATCH_INTERVAL_S", "2.5")
    settings = Settings()
    assert settings.watch is True and settings.watch_interval_s == 2.5
