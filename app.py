"""Launch face-app on a model bundle: `python app.py [--bundle DIR] [--host H] [--port P] [--study]`.

The bundle defaults to the shipped `assets/ml-100k`, or `$FACE_APP_BUNDLE` when set; without a bundle
it says how to build one. Study mode: `--study` or `FACE_APP_STUDY=1` (see docs/app.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

from face_app.cli import main

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "assets" / "ml-100k"

if __name__ == "__main__":
    sys.exit(main(default_bundle=DEFAULT_BUNDLE))
