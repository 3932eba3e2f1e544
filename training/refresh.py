"""Swap a workdir's new FACE read-out into an exported bundle, leaving the rest of the bundle as it was built.

    python -m training refresh-readout --config configs/ml-100k.yaml --workdir runs/ml-100k --bundle assets/ml-100k

Round 3 rebuilt the read-out for words a person accepts (issue 23) while the LLM's long tune (issue 24) was still
running. The served LLM does not read the descriptors (its prompts carry no user words, `GeneratorSpec`), so the
read-out can change under it. This command:

1. writes the workdir's `face/readout` into the bundle (`Descriptors.save`) and redraws the catalog map from its
   item embeddings (the frozen LightGCN of the cf stage);
2. amends the manifest: the config's `face` section and the report's `descriptors` and `descriptor_samples` become
   the workdir's, and `refreshed` records when, from where and on which machine; everything else (the item index,
   the tuned LLM, the results of every model) stays the bundle's and says so;
3. rewrites the model card: its build section is the bundle's own plus a paragraph on the refresh, and its
   conversations are replayed through the app's current engine with the new words.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from face_app import bundle as fmt
from face_app.descriptors import Descriptors
from training.card import CARD_FILE, describe_machine, machine_text, write_card
from training.config import Config, config_dict
from training.workdir import Workdir


def old_section(card: str, heading: str, until: str) -> list[str]:
    """The lines of a card between `## heading` and `## until` (exclusive), without the heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)^## {re.escape(until)}\n", card, re.S | re.M)
    return match.group(1).strip("\n").splitlines() if match else []


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def refresh_readout(config: Config, workdir: Path, bundle_dir: Path, command: str) -> dict[str, Any]:
    """Steps 1-3 of the module docstring; returns the `refreshed` record written to the manifest."""
    paths = Workdir(workdir)
    extra_path = paths.report_extra("face")
    if not paths.readout.is_dir() or not extra_path.exists():
        raise FileNotFoundError(f"{paths.readout} or {extra_path} is missing: run the face stage first")
    manifest = json.loads((bundle_dir / fmt.MANIFEST).read_text())
    card = (bundle_dir / CARD_FILE).read_text() if (bundle_dir / CARD_FILE).exists() else ""
    readout = Descriptors.load(paths.readout)
    readout.save(bundle_dir / fmt.READOUT_DIR)
    fmt.write_map(bundle_dir, list(readout.item_ids), readout.item_embeddings.detach().double().numpy())

    record = {"stages": ["face"], "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "workdir": str(workdir), "command": command, "commit": commit(),
              "machine": machine_text(describe_machine())}
    manifest["config"]["face"] = config_dict(config)["face"]
    manifest["report"].update(json.loads(extra_path.read_text()))
    manifest.setdefault("refreshed", []).append(record)
    fmt.write_manifest(bundle_dir, **{k: v for k, v in manifest.items() if k not in ("format", "files")})

    build = ["## How it was built", "", *[line for line in old_section(card, "How it was built", "Results")
                                           if not line.startswith("**Refreshed")]]
    while build and not build[-1].strip():
        build.pop()
    times = len(manifest["refreshed"])
    which = "" if times == 1 else f" (the latest of {times} refreshes the manifest lists)"
    build += ["", f"**Refreshed{which} {record['created'][:10]}** (`{command}`, commit {record['commit'][:10]}, "
              f"{record['machine']}): the FACE read-out was rebuilt by the face stage in `{workdir}` with the face "
              "section of the config above, on the LightGCN of that workdir's cf stage, and swapped into this "
              "bundle. The item index and the tuned LLM are the ones built as listed above; the LLM's prompts carry "
              "no descriptor words, so the new read-out does not change what it reads."]
    limits = [line[2:] for line in old_section(card, "Limitations", "Data terms and citations")
              if line.startswith("- ")]
    write_card(bundle_dir, config, workdir, report=manifest["report"], build=build, limits=limits)
    return record
