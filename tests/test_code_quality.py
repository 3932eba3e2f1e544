"""Repository-wide rules: ruff clean, nothing loaded through pickle or remote code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "app.py", *sorted((ROOT / "face_app").rglob("*.py")), *sorted((ROOT / "training").rglob("*.py"))]
# Loading paths that can execute code from a file or a hub: pickle, torch.load, remote code.
FORBIDDEN = re.compile(r"\bimport pickle\b|\bpickle\.|\btorch\.load\(|trust_remote_code\s*=\s*True|\bjoblib\.load\(")


def test_ruff_reports_nothing() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed: pip install -r tests/requirements.txt")
    result = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pickle_or_remote_code_loading(path: Path) -> None:
    hits = [f"{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1) if FORBIDDEN.search(line)]
    assert not hits, f"{path.name} loads through pickle or remote code:\n" + "\n".join(hits)
