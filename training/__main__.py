"""Command line: `python -m training build --config configs/ml-100k.yaml [--workdir DIR] [--stages data,cf,eval]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from training.card import record_command
from training.config import load_config
from training.launch import processes
from training.pipeline import STAGES, ConfigChanged, build, parse_stages
from training.report import publish, render_report, update_readme
from training.workdir import Workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description="Build face-app models and reports.")
    commands = parser.add_subparsers(dest="command", required=True)

    build_cmd = commands.add_parser("build", help="run the pipeline stages")
    build_cmd.add_argument("--config", required=True, type=Path, help="YAML config, e.g. configs/ml-100k.yaml")
    build_cmd.add_argument("--workdir", type=Path, help="output directory (default: runs/<config name>)")
    build_cmd.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    build_cmd.add_argument("--force", action="store_true", help="rebuild stages that are already done")
    build_cmd.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. cf.seeds=[0]"
    )

    report_cmd = commands.add_parser("report", help="re-render report.md from report.json")
    report_cmd.add_argument("--workdir", required=True, type=Path)
    report_cmd.add_argument("--out", type=Path, help="also publish the report here (e.g. docs/results.md)")
    report_cmd.add_argument(
        "--build-command", default="", help="the build command that made the workdir, printed atop --out"
    )
    report_cmd.add_argument("--readme", type=Path, help="also refresh the results block of this README")

    card_cmd = commands.add_parser("card", help="rewrite an exported bundle's model card (its conversations replayed "
                                   "through the app's current engine) and its manifest; nothing else changes")
    card_cmd.add_argument("--config", required=True, type=Path)
    card_cmd.add_argument("--workdir", required=True, type=Path, help="the build's workdir (its report and timings)")
    card_cmd.add_argument("--bundle", required=True, type=Path, help="the exported bundle, e.g. assets/ml-100k")
    card_cmd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="the overrides the build was run with (its config, as the card shows it)")

    refresh_cmd = commands.add_parser("refresh-readout", help="swap a workdir's FACE read-out into an exported "
                                      "bundle (training/refresh.py); the index and the LLM stay the bundle's")
    refresh_cmd.add_argument("--config", required=True, type=Path)
    refresh_cmd.add_argument("--workdir", required=True, type=Path)
    refresh_cmd.add_argument("--bundle", required=True, type=Path)
    refresh_cmd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    args = parser.parse_args(argv)
    if args.command == "refresh-readout":
        from training.refresh import refresh_readout

        command = " ".join(["python", "-m", "training", *(sys.argv[1:] if argv is None else argv)])
        record = refresh_readout(load_config(args.config, args.set), args.workdir, args.bundle, command)
        print(f"refreshed the read-out of {args.bundle} from {args.workdir} ({record['created']})")
        return 0
    if args.command == "card":
        from training.card import write_card

        record_command(args.workdir, ["python", "-m", "training", *(sys.argv[1:] if argv is None else argv)])
        write_card(args.bundle, load_config(args.config, args.set), args.workdir)
        print(f"wrote {args.bundle / 'README.md'} and its manifest")
        return 0
    if args.command == "report":
        if args.out:
            print(f"wrote {publish(args.workdir, args.out, args.build_command)}")
        else:
            print(render_report(args.workdir))
        if args.readme:
            link = os.path.relpath(args.out, args.readme.parent) if args.out else str(Workdir(args.workdir).report_md)
            update_readme(args.readme, args.workdir, link)
            print(f"updated {args.readme}")
        return 0

    try:
        config = load_config(args.config, args.set)
        stages = parse_stages(args.stages)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    workdir = args.workdir or Path("runs") / config.name
    launch = processes()  # the process group of a multi-process launch (training/launch.py), set up here
    if launch.is_main_process:
        record_command(workdir, ["python", "-m", "training", *(sys.argv[1:] if argv is None else argv)])
    try:
        build(config, workdir, stages, force=args.force)
    except ConfigChanged as error:
        if launch.is_main_process:
            print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        launch.destroy_process_group()
    launch.print(f"outputs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
