"""What gradio and gradio_client cost with no work behind them: the floor under `python -m bench.serving`.

    python -m bench.gradio_floor [--sessions 64] [--turns 5] [--client-processes 1 4]

Serves a chat that does nothing (it echoes the message and returns a card-sized reply in the same four outputs as
the app's `/chat`) with the app's queue settings (`face_app.ui`: CONCURRENCY, QUEUE_SIZE, THREADS and the analytics
setting of `face_app.cli`), then runs the sessions of `bench.serving` against it: every client connects, then all
send their opening at the same moment and chat their turns. For each count of client processes it prints the turn's
median and 95th percentile and the openings' 95th percentile. With one process every session's client-side work
shares one interpreter lock, as in `python -m bench`; with several, the sessions are split among them and start
together at a wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from bench.serving import chat_sessions, free_port, page_served, percentile, session_script

CARD = "<div class='fa-card'>" + "x" * 700 + "</div>"  # about the size of one of the app's cards
CONNECT_S = 30.0  # how long the clients get to connect before the sessions start together (64 take about 10 s)


def serve(port: int) -> None:
    """The echo chat on 127.0.0.1:port, queued as the app queues (blocks)."""
    import gradio as gr

    from face_app import cli, ui

    def chat(message: str, history: list) -> tuple:
        history = [*history, {"role": "user", "content": message},
                   *({"role": "assistant", "content": CARD} for _ in range(6))]
        return "", history, "<div>words</div>", f"<ul><li>{message}</li></ul>", history

    with gr.Blocks() as demo:
        state = gr.State([])
        box, bot, chips, history = gr.Textbox(), gr.Chatbot(), gr.HTML(), gr.HTML()
        box.submit(chat, [box, state], [box, bot, chips, history, state], api_name="chat")
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", cli.GRADIO_ANALYTICS_CACHE_FREQUENCY)
    demo.queue(default_concurrency_limit=ui.CONCURRENCY, max_size=ui.QUEUE_SIZE)
    demo.launch(server_name="127.0.0.1", server_port=port, max_threads=ui.THREADS, prevent_thread_lock=True,
                quiet=True)
    demo.block_thread()


class StartAt:
    """A barrier across processes: every session waits until one wall-clock time."""

    def __init__(self, when: float) -> None:
        self.when = when

    def wait(self, timeout: float | None = None) -> None:
        time.sleep(max(0.0, self.when - time.time()))

    def abort(self) -> None:
        pass


def client_process(url: str, scripts: Sequence[Sequence[str]], start: float) -> tuple[list[float], list[float], int]:
    """One client process's sessions: every turn's seconds, each opening's seconds, and the failed sessions."""
    runs = chat_sessions(url, scripts, opened=StartAt(start))
    return ([s for run in runs for s in run.seconds], [run.seconds[0] for run in runs if run.seconds],
            sum(run.error is not None for run in runs))


def measure(url: str, scripts: list[list[str]], processes: int, connect_s: float = CONNECT_S) -> dict:
    start = time.time() + connect_s
    parts = [scripts[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(processes) as pool:
        done = list(pool.map(client_process, [url] * processes, parts, [start] * processes))
    seconds = [s for part in done for s in part[0]]
    openings = [s for part in done for s in part[1]]
    return {"client_processes": processes, "sessions": len(scripts), "turns": len(seconds),
            "errors": sum(part[2] for part in done), "p50_s": round(percentile(seconds, 50), 3),
            "p95_s": round(percentile(seconds, 95), 3), "openings_p95_s": round(percentile(openings, 95), 3)}


def main(argv: Sequence[str] | None = None) -> int:
    from face_app import hardware

    parser = argparse.ArgumentParser(prog="python -m bench.gradio_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--client-processes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--connect-s", type=float, default=CONNECT_S, help="seconds the clients get to connect")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the echo app's own process
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    port = free_port()
    app = subprocess.Popen([sys.executable, "-m", "bench.gradio_floor", "--serve", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while not page_served(url):
            if app.poll() is not None or time.time() > deadline:
                print("error: the echo app did not start", file=sys.stderr)
                return 1
            time.sleep(0.3)
        scripts = [session_script(f"I loved film {i}", args.turns) for i in range(args.sessions)]
        runs = [measure(url, scripts, n, args.connect_s) for n in args.client_processes]
    finally:
        app.kill()
    print(json.dumps({"runs": runs, "machine": {**hardware.machine(),
                                                 "load_average": [round(x, 2) for x in os.getloadavg()]}}, indent=1))
    return 0 if all(run["errors"] == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
