#!/usr/bin/env bash
# The ML-1M bundle on a 2-core CPU, one core, in the order that lets its first results be checked early
# (issue 27): SASRec seed 0 against the published numbers, then what the later stages need, then the other
# seeds. Every step is `python -m training build` and resumes where a cut left it (cf per epoch, tune per
# checkpoint), so after a cut the same command continues:
#   nohup taskset -c 0 nice -n 10 bash configs/ml-1m-build.sh runs/ml-1m > runs/logs/ml-1m.log 2>&1 &
set -euo pipefail
workdir=${1:-runs/ml-1m}
build() { python -m training build --config configs/ml-1m.yaml --workdir "$workdir" --set threads=1 --set tune.threads=1 "$@"; }
build --stages data
build --stages cf --set 'cf.models=[SASRec]' --set 'cf.seeds=[0]'
build --stages cf --set 'cf.models=[Pop,LightGCN]' --set 'cf.seeds=[0]'
build --stages face,index
build --stages tune
build --stages cf
build --stages eval,export
