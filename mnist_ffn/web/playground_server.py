"""`mnist-ffn playground`: the page and its JSON API, served on this machine by FastAPI and uvicorn.

Gradio (the demo's library) is built of components that the server re-renders one event at a time;
the playground redraws dozens of neuron maps, the weights and two curves 10-20 times a second while it
trains. A hand-written canvas page fed by one JSON call per picture does that, and FastAPI and uvicorn
are what Gradio itself runs on: the same extra, nothing more to install.

Every tab has its own Session (web.playground), kept until the tab has been idle for
SESSION_IDLE_SECONDS or MAX_SESSIONS newer ones push it out. Bad input of any kind is one JSON
`{"error": ...}` with status 400 (404 for a session that has ended), shown by the page in one line;
the server goes on serving the other tabs.
"""

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
import webbrowser
from importlib import resources
from pathlib import Path

from mnist_ffn.errors import MnistFfnError, UsageError
from mnist_ffn.messages import one_line, reason
from mnist_ffn.web.playground import (
    BOUNDARY_CELLS,
    DATA_SETS,
    FEATURES,
    LIMITS,
    MAX_LAYERS,
    MAX_UPLOAD_BYTES,
    MAX_WIDTH,
    NEURON_CELLS,
    PAGE_ACTIVATIONS,
    TRAIN_SLICE_SECONDS,
    Session,
    Setting,
    Uploads,
)
from mnist_ffn.web.serving import (
    OnlyThisServer,
    allowed_hosts,
    announce_exposure,
    bind_host,
    check_port,
    page_url,
    quiet_server_logs,
)

MAX_SESSIONS = 16  # tabs training at once; the oldest idle one goes first
SESSION_IDLE_SECONDS = 30 * 60
MAX_BODY_BYTES = MAX_UPLOAD_BYTES * 2 + 4096  # a CSV sent as JSON text, escapes and all


class Gone(MnistFfnError):
    exit_code = 1


class Playground:
    """The sessions of every tab, and where saved runs and uploaded CSVs go."""

    def __init__(self, runs: Path, scratch: Path):
        self.runs = runs
        self.uploads = Uploads(runs / "uploads")
        self.scratch = scratch  # the sessions' own run folders: gone when the server stops
        self.sessions: dict[str, tuple[Session, threading.Lock]] = {}
        self.lock = threading.Lock()

    def start(self, values: dict) -> tuple[str, Session]:
        setting = Setting.parse(values)
        points_file = self.uploads.find(setting.upload) if setting.dataset == "points" else None
        key = uuid.uuid4().hex
        session = Session(setting, self.scratch / key, points_file)
        with self.lock:
            self._forget_old(room=1)
            self.sessions[key] = (session, threading.Lock())
        return key, session

    def _forget_old(self, room: int = 0) -> None:
        """Forget the tabs idle too long, then the least recently used ones until `room` more fit; never one
        whose request is training right now (its lock is held). Called with self.lock held."""
        now = time.monotonic()
        free = [(session.last_used, key) for key, (session, lock) in self.sessions.items() if not lock.locked()]
        idle = [key for used, key in free if now - used > SESSION_IDLE_SECONDS]
        excess = len(self.sessions) - len(idle) + room - MAX_SESSIONS
        oldest = [key for _, key in sorted(free) if key not in idle][: max(0, excess)]
        for key in [*idle, *oldest]:
            session, _ = self.sessions.pop(key)
            shutil.rmtree(session.run.path, ignore_errors=True)

    def uploads_in_use(self) -> set[str]:
        """The uploaded CSVs the tabs train on now: kept, however long ago they were uploaded."""
        with self.lock:
            return {session.setting.upload for session, _ in self.sessions.values() if session.setting.upload}

    @contextlib.contextmanager
    def session(self, key: object):
        with self.lock:
            self._forget_old()
            found = self.sessions.get(str(key))
        if found is None:
            raise Gone("this tab's network is no longer on the server (it restarted, or the tab sat idle): press reset")
        session, lock = found
        with lock:  # one request of a tab at a time; other tabs train meanwhile
            session.last_used = time.monotonic()
            yield session

    def save(self, session: Session) -> Path:
        setting = session.setting
        name = f"{setting.dataset}-{'x'.join(map(str, setting.hidden)) or 'linear'}-{setting.activation}"
        name = f"{name}-epoch{session.epoch}"
        folder, number = self.runs / name, 1
        with self.lock:  # two tabs saving at once get two folders
            while os.path.lexists(folder):  # a link to nowhere holds its name too
                number += 1
                folder = self.runs / f"{name}-{number}"
            folder.mkdir(parents=True)
        try:
            return session.save(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a folder half written (a full disk) is no run: gone
            raise


def page_html() -> str:
    limits = {
        "ranges": LIMITS,
        "maxLayers": MAX_LAYERS,
        "maxWidth": MAX_WIDTH,
        "dataSets": list(DATA_SETS),
        "features": list(FEATURES),
        "activations": list(PAGE_ACTIVATIONS),
        "defaults": Setting().__dict__ | {"features": list(Setting().features), "hidden": list(Setting().hidden)},
        "boundaryCells": BOUNDARY_CELLS,
        "neuronCells": NEURON_CELLS,
        "maxUploadBytes": MAX_UPLOAD_BYTES,
    }
    page = resources.files("mnist_ffn.web").joinpath("playground.html").read_text(encoding="utf-8")
    return page.replace("/*LIMITS*/null", json.dumps(limits))


def build_app(playground: Playground, allowed: set[str]):
    """The page and its JSON API, answering only `allowed` hosts (serving.allowed_hosts)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = FastAPI(title="mnist-ffn playground", docs_url=None, redoc_url=None, openapi_url=None)
    html = page_html()

    @app.middleware("http")
    async def only_json(request: Request, call_next):
        """Every call the page makes sends JSON: a form posted by another site cannot (and a cross-site fetch
        of JSON makes the browser ask first, which this server never agrees to)."""
        if request.method == "POST":
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return JSONResponse({"error": "not a request this page makes (expected application/json)"}, 415)
        return await call_next(request)

    app.add_middleware(OnlyThisServer, allowed=allowed)  # outermost: a foreign Host is refused before anything

    def refused(exc: Exception, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": one_line(str(exc))}, status_code=status)  # ConfigError lists 10 problems

    async def body(request: Request) -> dict:
        too_large = UsageError(f"a request larger than {MAX_BODY_BYTES // 2**20} MB; the playground reads up to that")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise too_large  # refused before a byte of it is read
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise too_large
            chunks.append(chunk)
        try:
            values = json.loads(b"".join(chunks).decode("utf-8"))
        except (ValueError, RecursionError):  # not UTF-8, not JSON, an integer of more than 4,300 digits, too deep
            raise UsageError("not a request this page makes (expected a JSON object)") from None
        if not isinstance(values, dict):
            raise UsageError("not a request this page makes (expected a JSON object)")
        return values

    def answer(work):
        """Run a request's work; every refusal is one line of JSON for the page, never a traceback."""
        try:
            return JSONResponse(work())
        except Gone as exc:
            return refused(exc, 404)
        except (MnistFfnError, ValueError, TypeError, KeyError) as exc:
            return refused(exc)
        except OSError as exc:  # the server's disk: full, or its folders gone
            return refused(OSError(f"the server could not write its files ({exc.strerror or exc})"), 500)
        except RuntimeError as exc:  # torch refusing numbers no check foresaw: the tab hears it, the server goes on
            return refused(RuntimeError(f"this setting cannot be trained ({reason(exc)})"), 500)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    def json_call(path: str):
        """A POST endpoint: the JSON object the page sent, handed to `work` off the event loop."""

        def register(work):
            async def endpoint(request: Request):
                try:
                    values = await body(request)
                except UsageError as exc:
                    return refused(exc)
                return await _in_thread(answer, lambda: work(values))

            app.post(path)(endpoint)
            return work

        return register

    @json_call("/api/session")
    def start(values: dict) -> dict:
        setting = values.get("setting")
        if not isinstance(setting, dict):
            raise UsageError("not a request this page makes (a setting is an object of controls)")
        key, _ = playground.start(setting)
        with playground.session(key) as session:
            return {"session": key, **session.points(), "frame": session.frame().to_json()}

    @json_call("/api/frame")
    def frame(values: dict) -> dict:
        mode, view = values.get("train", "none"), values.get("view", "forward")
        if mode not in ("play", "step", "none"):
            raise UsageError(f"train: play, step or none, not {str(mode)[:20]!r}")
        if view not in ("forward", "backward"):
            raise UsageError(f"view: forward or backward, not {str(view)[:20]!r}")
        with playground.session(values.get("session")) as session:
            if mode == "play":
                session.train(epochs=1, seconds=TRAIN_SLICE_SECONDS)
            elif mode == "step":
                session.train(epochs=1)
            return {**session.frame(backward=view == "backward").to_json(), "stopped": session.stopped}

    @json_call("/api/point")
    def point(values: dict) -> dict:
        """One point's chain rule through the tab's network as it is now, with the gradient check."""
        with playground.session(values.get("session")) as session:
            return session.chain_rule(values)

    @json_call("/api/upload")
    def upload(values: dict) -> dict:
        name, text = values.get("name"), values.get("text")
        if not isinstance(name, str) or not isinstance(text, str):
            raise UsageError("not a request this page makes (an upload is a file's name and text)")
        token, count, classes = playground.uploads.add(name, text.encode("utf-8"), playground.uploads_in_use())
        return {"upload": token, "points": count, "classes": list(classes)}

    @json_call("/api/save")
    def save(values: dict) -> dict:
        with playground.session(values.get("session")) as session:
            folder = playground.save(session).resolve()
            return {"folder": str(folder), "eval": session.eval_command(folder)}

    @app.get("/api/download/{key}")
    async def download(key: str):
        def work():
            with playground.session(key) as session:
                data = session.checkpoint_bytes(session.run.path / "download.pt")  # goes with the session
                setting = session.setting
                return data, f"playground-{setting.dataset}-epoch{session.epoch}.pt"

        try:
            data, name = await _in_thread(lambda: work())
        except Gone as exc:
            return refused(exc, 404)
        except MnistFfnError as exc:
            return refused(exc)
        attachment = {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(data, media_type="application/octet-stream", headers=attachment)

    return app


async def _in_thread(function, *args):
    """Training and drawing are torch work: off the event loop, so every tab's requests are served at once."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)


def serve(*, host: str, port: int, open_browser: bool, runs: Path, allow_hosts: tuple[str, ...] = ()) -> None:
    """Check the address, then serve the playground until Ctrl-C."""
    check_port(host, port)
    allowed = allowed_hosts(host, port, allow_hosts)
    announce_exposure(host, port, allowed)
    if runs.exists() and not runs.is_dir():
        raise UsageError(f"--runs {runs}: exists and is not a folder")
    try:
        import fastapi  # noqa: F401  (build_app's)
        import uvicorn
    except ImportError:
        raise MnistFfnError("the playground needs the demo extra: pip install 'mnist-ffn[demo]'") from None
    quiet_server_logs()
    with tempfile.TemporaryDirectory(prefix="mnist-ffn-playground-") as scratch:
        app = build_app(Playground(runs.absolute(), Path(scratch)), allowed)
        url = page_url(host, port)
        print(f"mnist-ffn playground: {url} (Ctrl-C to stop; saved runs go to {runs})", flush=True)
        if open_browser:
            threading.Timer(1.0, lambda: webbrowser.open(url)).start()
        config = uvicorn.Config(app, host=bind_host(host), port=port, log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        server.run()
