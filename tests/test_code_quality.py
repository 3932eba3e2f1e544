"""Repository-wide rules: ruff clean, nothing loaded through pickle or remote code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "app.py", *(path for package in ("face_app", "training", "bench")
                              for path in sorted((ROOT / package).rglob("*.py")))]
# Loading paths that can execute code from a file or a hub: pickle and its wrappers (joblib, dill, pandas'
# read_pickle, numpy's allow_pickle), torch.load unless weights_only=True, remote code.
FORBIDDEN = re.compile(
    r"\b(?:import|from)\s+(?:c?pickle|_pickle|joblib|dill|cloudpickle)\b|\bpickle\.|\bjoblib\.|\bread_pickle\("
    r"|allow_pickle\s*=\s*True|\btorch\.load\((?![^)]*weights_only\s*=\s*True)|trust_remote_code\s*=\s*True"
)


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


@pytest.mark.parametrize("line, flagged", [
    ("import pickle", True), ("from pickle import loads", True), ("import joblib", True), ("joblib.load(path)", True),
    ("data = pickle.loads(blob)", True), ("frame = pd.read_pickle(path)", True),
    ("np.load(p, allow_pickle=True)", True),
    ("state = torch.load(path)", True), ("state = torch.load(path, map_location='cpu')", True),
    ("AutoModel.from_pretrained(name, trust_remote_code=True)", True),
    ("state = torch.load(path, weights_only=True)", False), ("tensors = load_file(path)", False),
    ("np.load(path, allow_pickle=False)", False), ("AutoModel.from_pretrained(name)", False),
])
def test_the_scan_flags_every_unsafe_loader_and_nothing_safe(line: str, flagged: bool) -> None:
    assert bool(FORBIDDEN.search(line)) is flagged
