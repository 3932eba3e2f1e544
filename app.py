"""Launch face-app on a model bundle: `python app.py [--bundle DIR]`.

The bundle defaults to the shipped `assets/ml-100k`, or `$FACE_APP_BUNDLE` when set.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "assets" / "ml-100k"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="face-app: a conversational recommender.")
    parser.add_argument("--bundle", type=Path, help="bundle directory (default: $FACE_APP_BUNDLE or assets/ml-100k)")
    args = parser.parse_args(argv)
    bundle = args.bundle or Path(os.environ.get("FACE_APP_BUNDLE") or DEFAULT_BUNDLE)
    if not (bundle / "manifest.json").exists():
        print(
            f"face-app: no model bundle at {bundle}.\n"
            "This version ships the data pipeline and the baseline recommenders, not yet a servable bundle or "
            "the chat UI. Build and evaluate the baselines with:\n"
            "  python -m training build --config configs/ml-100k.yaml --workdir runs/ml-100k\n"
            "(see README.md, 'Train your own').",
            file=sys.stderr,
        )
        return 1
    print(f"face-app: found {bundle / 'manifest.json'}, but this version cannot serve bundles yet.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
