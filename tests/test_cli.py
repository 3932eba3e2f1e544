"""`python app.py`: the command line answers before anything heavy loads, and says what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from face_app import cli

ROOT = Path(__file__).resolve().parent.parent


def test_help_names_every_option_and_loads_neither_gradio_nor_torch() -> None:
    probe = ("import sys, contextlib, io\nfrom face_app import cli\nout = io.StringIO()\n"
             "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n    cli.main(['--help'])\n"
             "print(out.getvalue())\nprint('heavy:', sorted({'gradio', 'torch', 'transformers'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for option in ("--bundle", "--host", "--port", "--study", "--lightgcn-only", "--precision"):
        assert option in done.stdout
    assert "heavy: []" in done.stdout


def test_a_missing_bundle_says_how_to_build_one(tmp_path: Path, capsys) -> None:
    assert cli.main(["--bundle", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert f"no model bundle at {tmp_path / 'none'}" in err and "python -m training build" in err


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_a_port_that_is_not_one_is_refused_in_one_line(port: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["--port", port])
    assert stop.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_bf16_asked_for_on_a_cpu_without_native_bf16_is_refused_before_the_bundle_loads(monkeypatch, capsys) -> None:
    from face_app import hardware

    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what main sets; kept out of the rest of the session
    monkeypatch.setenv("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1")
    assert cli.main(["--bundle", str(ROOT / "assets" / "ml-100k"), "--precision", "bf16"]) == 1
    err = capsys.readouterr().err
    assert "precision bf16 asked for on a CPU without native bf16" in err and "use precision: auto or fp32" in err
