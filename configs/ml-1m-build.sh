#!/usr/bin/env bash
# The ML-1M bundle on a 2-core CPU, one core, in the order that lets its first results be checked early
# (issue 27, docs/ml-1m.md): SASRec seed 0 against the published numbers, then what the later stages need, then
# the other seeds. Every step is `python -m training build` and resumes where a cut left it (cf per epoch, tune
# per checkpoint), so after a cut the same command continues:
#   nohup taskset -c 0 nice -n 10 bash configs/ml-1m-build.sh runs/ml-1m > runs/logs/ml-1m.log 2>&1 &
# A new session whose runs/ is empty starts from the resume kit (assets/resume/ml-1m: the cf stage's finished runs
# and checkpoints, copied in without overwriting anything newer); `bash configs/ml-1m-build.sh WORKDIR save`
# refreshes the kit from the workdir at the end of a session.
set -euo pipefail
workdir=${1:-runs/ml-1m}
kit=assets/resume/ml-1m
source "$(dirname "$0")/resume-kit.sh"
if [ "${2:-}" = save ]; then
    kit_save "$workdir" "$kit"
    exit 0
fi
kit_restore "$kit" "$workdir"
build() { python -m training build --config configs/ml-1m.yaml --workdir "$workdir" --set threads=1 --set tune.threads=1 "$@"; }
# The cf stage is run in parts; each part's done marker records its own model list, so the parts run with --force,
# which retrains nothing: a run whose run.json holds the same settings is reused (training/cf.py).
build --stages data
build --stages cf --force --set 'cf.models=[SASRec]' --set 'cf.seeds=[0]'
build --stages cf --force --set 'cf.models=[Pop,LightGCN]' --set 'cf.seeds=[0]'
build --stages face,index
build --stages tune
build --stages cf --force
build --stages eval,export
