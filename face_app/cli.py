"""`python app.py`: the command line, parsed before anything heavy is imported.

`--help` and a missing bundle answer at once; gradio, torch and the model load only when the app is really
started, and each step of a start says what it is doing on stdout (a first start converts the base model
and can take minutes; a visitor of the console should know why nothing is served yet).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

NO_BUNDLE = """face-app: no model bundle at {bundle}.
Build one (the tiny config takes a few minutes on 2 CPU cores) and point the app at it:
  python -m training build --config configs/tiny.yaml --workdir runs/tiny
  python app.py --bundle runs/tiny/bundle
or the full one (assets/ml-100k):
  python -m training build --config configs/ml-100k.yaml --workdir runs/ml-100k
(see README.md, 'Train your own')."""

# OpenMP's wait policy for the served app (`main`).
OMP_WAIT_POLICY = "PASSIVE"
# How many events pass between two of gradio's monitoring summaries (`main`): in effect, never.
GRADIO_ANALYTICS_CACHE_FREQUENCY = str(2**62)


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(description="face-app: a conversational recommender (a Gradio chat).")
    found.add_argument("--bundle", type=Path, help="bundle directory (default: $FACE_APP_BUNDLE or assets/ml-100k)")
    found.add_argument("--host", help="address to listen on (default: Gradio's, 127.0.0.1, or "
                                      "$GRADIO_SERVER_NAME; 0.0.0.0 to serve a network)")
    found.add_argument("--port", type=int, help="port (default: Gradio's, 7860, or $GRADIO_SERVER_PORT)")
    found.add_argument("--study", action="store_true", help="study mode (also FACE_APP_STUDY=1)")
    found.add_argument("--study-config", type=Path,
                       help="study YAML (default: $FACE_APP_STUDY_CONFIG or configs/study.yaml)")
    found.add_argument("--lightgcn-only", action="store_true", help="do not load the tuned LLM")
    found.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                       help="the LLM's matrix products (default: $FACE_APP_PRECISION or auto: bf16 where the CPU "
                            "computes it natively, AMX-BF16 or AVX512-BF16, fp32 elsewhere)")
    return found


def say(message: str, since: float | None = None) -> None:
    """A start-up step, on stdout (stderr holds only what went wrong)."""
    took = f" ({time.perf_counter() - since:.1f} s)" if since is not None else ""
    print(f"face-app: {message}{took}", flush=True)


def main(argv: list[str] | None = None, default_bundle: Path | None = None) -> int:
    args = parser().parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        parser().error(f"--port {args.port} is not a port (1-65535)")
    bundle = args.bundle or Path(os.environ.get("FACE_APP_BUNDLE") or default_bundle or "assets/ml-100k")
    if not (bundle / "manifest.json").exists():
        print(NO_BUNDLE.format(bundle=bundle), file=sys.stderr)
        return 1
    start = time.perf_counter()
    # First-start steps of the library (a download, the model conversion) as plain lines on stdout.
    steps = logging.StreamHandler(sys.stdout)
    steps.setFormatter(logging.Formatter("face-app: %(message)s"))
    logging.getLogger("face_app").addHandler(steps)
    logging.getLogger("face_app").setLevel(logging.INFO)
    # Before torch loads (OpenMP reads it once): worker threads that finish a parallel region sleep instead of
    # spinning. The served app runs the batched search (torch, 2 threads) beside the chat handlers (Python), and
    # spinning workers took the core a handler needed: 64 sessions at once, 95th percentile 3.77 / 4.04 / 3.95 s
    # PASSIVE against 5.05 / 5.20 s unset and 8.92 s ACTIVE (`python -m bench.serving --sessions 64 --turns 5`,
    # AMD EPYC AVX2, 2 cores, round 3 session 7). A value set in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    # Gradio's queue recomputes a pandas summary of every event it remembers (up to 10,000) after each event, for
    # a monitoring dashboard this app never enables: over a study's weeks that is a groupby of 10,000 rows per
    # chat turn, on the thread that serves every visitor. Recomputed every GRADIO_ANALYTICS_CACHE_FREQUENCY
    # events; a value set in the environment wins.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", GRADIO_ANALYTICS_CACHE_FREQUENCY)
    say(f"loading gradio and torch (OpenMP wait policy {os.environ['OMP_WAIT_POLICY']}) ...")
    # Imported here, not at the top: these take seconds, and --help or a missing bundle should not wait.
    from face_app.bundle import BundleError
    from face_app.handlers import load_app
    from face_app.hardware import capability, choose_precision
    from face_app.study import StudyConfig, StudyLog, db_path, redact
    from face_app.ui import launch

    try:  # before the study log opens: a refused precision leaves nothing behind
        precision = choose_precision(args.precision or os.environ.get("FACE_APP_PRECISION") or "auto")
    except ValueError as error:
        print(f"face-app: {error}", file=sys.stderr)
        return 1
    study = log = None
    if args.study or os.environ.get("FACE_APP_STUDY", "") not in ("", "0", "false"):
        study = StudyConfig.load(args.study_config or os.environ.get("FACE_APP_STUDY_CONFIG") or None)
        log = StudyLog(db_path(study))
        say(f"study mode, logging to {redact(str(log.path))}")
    if not args.lightgcn_only:
        say(f"the LLM computes in {precision} on this CPU ({capability()})")
    say(f"loading the bundle {bundle} (checking every file's sha256; a first start also fetches the dataset "
        "and converts the base model, which can take a few minutes)" + (", without the LLM" if args.lightgcn_only
                                                                       else ""), start)
    try:
        app = load_app(bundle, study=study, log=log, load_llm=not args.lightgcn_only, background=True,
                       precision=precision)
    except BundleError as error:
        print(f"face-app: {error}", file=sys.stderr)
        return 1
    say("starting the web server", start)
    options = {key: value for key, value in (("server_name", args.host), ("server_port", args.port)) if value}
    demo = launch(app, prevent_thread_lock=True, quiet=True, **options)
    say(f"ready on {demo.local_url} (Ctrl+C stops it)" + ("" if args.lightgcn_only else
        "; the LLM arm may still be loading: a turn that needs it waits for it"), start)
    demo.block_thread()
    return 0
