"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def face_app_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A download cache shared by the whole session; `$FACE_APP_CACHE` points at it while it is in use.

    An explicit `$FACE_APP_CACHE` is kept (a CI cache, say); otherwise pytest's own cache
    directory (`.pytest_cache/`, never committed) holds it, so pinned wheels are fetched once
    per checkout rather than once per run.
    """
    if os.environ.get("FACE_APP_CACHE"):
        root = Path(os.environ["FACE_APP_CACHE"])
    elif getattr(request.config, "cache", None) is not None:
        root = request.config.cache.mkdir("face-app")
    else:
        root = tmp_path_factory.mktemp("face-app-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACE_APP_CACHE", str(root))
        yield root


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory, face_app_cache: Path) -> Path:
    """The tiny config built end to end once per session (every stage, the bundle in `<workdir>/bundle`).

    `$FACE_APP_TINY_WORKDIR` names a workdir to build into and reuse across sessions (finished stages
    are skipped); by default a fresh temporary one.
    """
    from training.__main__ import main

    reuse = os.environ.get("FACE_APP_TINY_WORKDIR")
    workdir = Path(reuse) if reuse else tmp_path_factory.mktemp("tiny")
    config = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    assert main(["build", "--config", str(config), "--workdir", str(workdir)]) == 0
    return workdir


@pytest.fixture(scope="session")
def tiny_bundle(tiny_build: Path) -> Path:
    """The tiny build's exported bundle."""
    return tiny_build / "bundle"


@pytest.fixture(scope="session")
def tiny_app(tiny_bundle: Path):
    """`face_app.handlers.load_app` on the tiny bundle, loaded once per session (its engine is shared, read-only)."""
    from face_app.handlers import load_app

    return load_app(tiny_bundle)
