"""The app as visitors meet it: `python app.py --bundle B` as a process on a loopback port (`AppProcess`), or
an `App` served from this process (`serve`), and many `gradio_client` sessions chatting with it at once
(`chat_sessions`). Used by `python -m bench` and by the tests. As a program, one session's served turns:

    python -m bench.serving [--bundle assets/ml-100k] [--turns 20] [--lightgcn-only] [--fresh-tls]
    python -m bench.serving --sessions 32 --turns 5 --profile runs/serving-profile.txt

prints the median and every turn's seconds (after 3 turns of warm-up), the machine and the load average;
`--fresh-tls` lets gradio_client build a TLS context per HTTP call, as it does by default (`tls_context`).
`--sessions N` chats N sessions at once instead; `--profile FILE` samples the app process with py-spy
(`pip install py-spy`) while they chat, writes its raw stacks to FILE and prints the share of the app's busy
samples spent in each of the functions that take the most (`busy_shares`)."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

ROOT = Path(__file__).resolve().parents[1]
# gradio_client's HTTP calls time out after 5-20 s by default: too short for a busy 2-core machine serving
# 16 sessions; a turn that takes longer than this counts as failed.
CLIENT_TIMEOUT_S = 300.0
# Concurrent sessions: a title of their own, then follow-ups that never add to the history, so a history
# panel that shows anything but the session's own title is state from another session.
SESSION_FOLLOW_UPS = ("something darker", "from the 90s", "more like the second one", "recommend something else")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def page_served(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Launch a `face_app.ui.App` on a free loopback port in this process; yields its URL, closes it after."""
    from face_app.ui import launch

    port = free_port()
    demo = launch(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


class AppProcess:
    """`python app.py --bundle B [args]` in its own process, on a free loopback port (Gradio's
    `GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT`, since `app.py` launches with no host or port, as on a Space).

    Its output goes to a file (`output()`); `wait_until_served()` returns the seconds from process start to
    the first page served; `peak_rss_mb()` is its peak resident memory so far (Linux `VmHWM`).
    """

    def __init__(self, bundle: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.command = [sys.executable, str(ROOT / "app.py"), "--bundle", str(bundle), *args]
        self.env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
                    "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
        self._log = tempfile.NamedTemporaryFile(prefix="face-app-", suffix=".log", delete=False)
        self.process: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> AppProcess:
        self.started = time.perf_counter()
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def wait_until_served(self, timeout: float = 900.0) -> float:
        """Seconds from `start()` to the first page served over HTTP; RuntimeError (with the app's output)
        when the process exits first or `timeout` passes."""
        assert self.process is not None, "start() first"
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if page_served(self.url):
                return time.perf_counter() - self.started
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode} before serving:\n{self.output()}")
            time.sleep(0.1)
        raise RuntimeError(f"app not serving {self.url} after {timeout:.0f} s:\n{self.output()}")

    def run_to_exit(self, timeout: float = 900.0) -> int:
        """Run until the process exits by itself (an app that refuses to start); its exit status."""
        assert self.process is not None, "start() first"
        return self.process.wait(timeout=timeout)

    def peak_rss_mb(self) -> float:
        assert self.process is not None, "start() first"
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed (a crash, an OOM kill, a pulled plug)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> AppProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class SessionRun:
    """One gradio_client session: what it sent, how long each turn took, and what it saw last."""

    messages: list[str]
    seconds: list[float] = field(default_factory=list)
    error: str | None = None
    chat: list[dict[str, Any]] = field(default_factory=list)
    descriptors: str = ""
    history: str = ""


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One default TLS context (certifi's CAs, as httpx builds it) for every client of this process.

    gradio_client makes each HTTP call through a fresh `httpx` client, which builds a TLS context and loads the
    CA bundle again unless it is given one, two calls per turn, even for plain HTTP on loopback (`python -m
    bench.serving --fresh-tls` shows the cost). A browser does nothing of the kind, so the bench's clients
    share this one."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def client(url: str, shared_tls: bool = True) -> Any:
    """A `gradio_client.Client` on `url`: a new session, with `CLIENT_TIMEOUT_S` on every HTTP call and the shared
    `tls_context` (unless not `shared_tls`: gradio_client's default, a new one per call)."""
    from gradio_client import Client

    # `ssl_verify` reaches every httpx call as `verify=`, which takes a context as well as a bool.
    return Client(url, verbose=False, ssl_verify=tls_context() if shared_tls else True,
                  httpx_kwargs={"timeout": CLIENT_TIMEOUT_S})


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between order statistics."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def session_openings(catalog: Any, n: int) -> list[str]:
    """`n` messages "I loved <title>" naming distinct popular titles, each parsed as exactly that title."""
    import numpy as np

    from face_app.dialogue import parse

    openings: list[str] = []
    for row in np.argsort(-np.asarray(catalog.popularity), kind="stable"):
        item = catalog.item(catalog.ids[row])
        message = f"I loved {item.title}"
        if parse(message, catalog).titles == [item.item_id]:
            openings.append(message)
            if len(openings) == n:
                break
    return openings


def session_script(opening: str, turns: int) -> list[str]:
    """`opening`, then `turns - 1` of SESSION_FOLLOW_UPS in turn: a session whose history is its opening's."""
    return [opening, *(SESSION_FOLLOW_UPS[i % len(SESSION_FOLLOW_UPS)] for i in range(turns - 1))]


class Opening(Protocol):
    """What the sessions of a run wait at once connected (a `threading.Barrier`, or `bench.gradio_floor.StartAt`
    across processes), so that they start chatting together."""

    def wait(self, timeout: float | None = None) -> object: ...

    def abort(self) -> None: ...


def chat_session(url: str, messages: Sequence[str], shared_tls: bool = True,
                 opened: Opening | None = None) -> SessionRun:
    """A fresh gradio_client session (its own server-side state) sending `messages` to `/chat` one at a time.
    opened: what every session of a run waits at once its client is connected, so that the sessions start chatting
    together with their pages loaded (a visitor opens the page, then writes)."""
    run = SessionRun(list(messages))
    try:
        session = client(url, shared_tls)
        if opened is not None:
            opened.wait(timeout=CLIENT_TIMEOUT_S)
        for message in messages:
            start = time.perf_counter()
            _, run.chat, run.descriptors, run.history = session.predict(message, api_name="/chat")
            run.seconds.append(time.perf_counter() - start)
    except Exception as error:  # a failed turn is what is being counted
        run.error = f"{type(error).__name__}: {error}"
        if opened is not None:
            opened.abort()  # the others stop waiting for this one
    return run


def chat_sessions(url: str, scripts: Sequence[Sequence[str]], opened: Opening | None = None) -> list[SessionRun]:
    """One concurrent session (a thread and a client each) per script: every client connects, then all send their
    first message at once (`chat_session`'s `opened`: by default a barrier of these sessions)."""
    opened = opened or threading.Barrier(len(scripts))
    with ThreadPoolExecutor(max_workers=len(scripts)) as pool:
        return list(pool.map(lambda script: chat_session(url, script, opened=opened), scripts))


class PageSession:
    """One browser tab, as the page's JavaScript talks to the server: events called by their id (private ones
    too, which gradio_client refuses), one session hash, results read from the queue's event stream."""

    def __init__(self, url: str, session_hash: str | None = None) -> None:
        """session_hash: join an existing session (a `gradio_client.Client`'s `session_hash`: the client's calls
        and this tab's then share one server-side state), else a new one."""
        self.url = url
        self.session_hash = session_hash or uuid.uuid4().hex[:11]
        config = httpx.get(f"{url}config", timeout=CLIENT_TIMEOUT_S).json()
        self.events = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}

    def send(self, event: str, *data: object, event_data: dict | None = None) -> None:
        """Queue `event` with its inputs; event_data: what the page sends with it (a like: index, value, liked)."""
        body = {"data": list(data), "fn_index": self.events[event], "session_hash": self.session_hash,
                "event_data": event_data, "trigger_id": None}
        # ASCII JSON, as a browser's JSON.stringify may send it: a lone surrogate travels as its \\u escape.
        httpx.post(f"{self.url}gradio_api/queue/join", content=json.dumps(body).encode(),
                   headers={"content-type": "application/json"}, timeout=CLIENT_TIMEOUT_S).raise_for_status()

    def result(self) -> list:
        with httpx.stream("GET", f"{self.url}gradio_api/queue/data", params={"session_hash": self.session_hash},
                          timeout=CLIENT_TIMEOUT_S) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        assert message.get("success"), message
                        return message["output"]["data"]
        raise AssertionError("the event stream closed without a result")

    def call(self, event: str, *data: object, event_data: dict | None = None) -> list:
        self.send(event, *data, event_data=event_data)
        return self.result()


# Leaf frames of a thread that is waiting, not working (py-spy samples idle threads too).
IDLE_LEAVES = ("Condition.wait", "Queue.get", "EpollSelector.select", "Future.result", "Event.wait", "select ")


def busy_shares(raw: str, top: int = 15) -> dict[str, float]:
    """From py-spy's raw output (a stack of `function (file:line)` frames joined by ";" and a sample count per
    line): the share of the busy samples (leaf not a wait) whose stack holds each function, the `top` largest."""
    held: dict[str, int] = {}
    busy = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or frames[-1].startswith(IDLE_LEAVES):
            continue
        busy += int(count)
        for name in {frame.split(" (")[0] for frame in frames[1:]}:  # the first frame names the thread
            held[name] = held.get(name, 0) + int(count)
    ranked = [(name, n) for name, n in sorted(held.items(), key=lambda kv: -kv[1]) if not name.startswith("Thread.")]
    return {name: round(n / busy, 3) for name, n in ranked[:top]}


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user and system) a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def concurrent(app: AppProcess, sessions: int, turns: int, profile: Path | None) -> int:
    """`sessions` sessions of `turns` turns at once against `app`, each opening with its own title; with
    `profile`, py-spy samples the app meanwhile (raw stacks to that file, `busy_shares` printed)."""
    import json
    import subprocess

    from face_app import hardware
    from face_app.bundle import Bundle
    from face_app.catalog import Catalog
    from face_app.datasets import load_dataset

    bundle = Bundle.load(Path(app.command[app.command.index("--bundle") + 1]))
    dataset = load_dataset(bundle.dataset["source"], paths=bundle.dataset.get("paths"))
    catalog, _ = Catalog.from_dataset(dataset, list(bundle.descriptors.item_ids))
    scripts = [session_script(o, turns) for o in session_openings(catalog, sessions)]
    load = [round(x, 2) for x in os.getloadavg()]
    spy = None
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
        # --nonblocking: py-spy reads the stacks without pausing the app (pausing it 50 times a second doubled the
        # turn under 64 sessions, 8.9 s against 4.4 s at the median).
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(app.process.pid), "--format", "raw", "--rate", "50",
                                "--nonblocking", "--threads", "--output", str(profile)], stdout=subprocess.DEVNULL)
    start, app_cpu, client_cpu = time.perf_counter(), process_cpu_s(app.process.pid), time.process_time()
    runs = chat_sessions(app.url, scripts)
    wall = time.perf_counter() - start
    app_cpu, client_cpu = process_cpu_s(app.process.pid) - app_cpu, time.process_time() - client_cpu
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait()
    seconds = [s for run in runs for s in run.seconds]
    later = [s for run in runs for s in run.seconds[1:]]
    print(json.dumps({"sessions": sessions, "turns": turns, "wall_s": round(wall, 2),
                      "errors": sum(run.error is not None for run in runs),
                      "p50_s": percentile(seconds, 50), "p95_s": percentile(seconds, 95),
                      # the sessions' first turns, all sent at once, and the turns after them
                      "openings_p95_s": percentile([run.seconds[0] for run in runs if run.seconds], 95),
                      "later_p95_s": percentile(later, 95) if later else None,
                      # CPU seconds over the sessions: the app's, and the clients' (this process: gradio_client)
                      "app_cpu_s": round(app_cpu, 1), "client_cpu_s": round(client_cpu, 1),
                      "busy_shares": busy_shares(profile.read_text()) if profile is not None else None,
                      "machine": hardware.machine(), "load_average": load}, indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import json
    import statistics

    from face_app import hardware

    parser = argparse.ArgumentParser(prog="python -m bench.serving", description="One session's served turns.")
    parser.add_argument("--bundle", type=Path, default=Path("assets/ml-100k"))
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--lightgcn-only", action="store_true", help="serve without the LLM arm")
    parser.add_argument("--fresh-tls", action="store_true", help="a new TLS context per HTTP call (the default "
                        "of gradio_client)")
    parser.add_argument("--sessions", type=int, default=0, help="chat this many sessions at once instead of one")
    parser.add_argument("--profile", type=Path, help="py-spy's raw stacks of the app while the sessions chat")
    args = parser.parse_args(argv)
    messages = session_script("I loved Toy Story", args.turns)
    with AppProcess(args.bundle, *(["--lightgcn-only"] if args.lightgcn_only else [])) as app:
        app.wait_until_served()
        warm = chat_session(app.url, messages[:3], not args.fresh_tls)
        if args.sessions:
            return concurrent(app, args.sessions, args.turns, args.profile)
        run = chat_session(app.url, messages, not args.fresh_tls)
    if warm.error or run.error:
        print(f"a turn failed: {warm.error or run.error}", file=sys.stderr)
        return 1
    print(json.dumps({"served_turn_p50_s": round(statistics.median(run.seconds), 4),
                      "seconds": [round(x, 4) for x in run.seconds], "shared_tls": not args.fresh_tls,
                      "lightgcn_only": args.lightgcn_only, "machine": hardware.machine(),
                      "load_average": [round(x, 2) for x in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

