#!/usr/bin/env bash
# Issue 24's second teacher candidate on ML-100k: the stride-1 candidate (configs/teacher-build.sh: RecBole's
# training, one prefix per target, validated every epoch, patience 10) with RecBole's SASRec blocks as well
# (`cf.sasrec.style=recbole`: post-LayerNorm, embedding LayerNorm, positions from the oldest item;
# face_app/sequential.py). One seed per call, on one core; every epoch is checkpointed, so after a cut the same
# call continues:
#   nohup taskset -c 1 nice -n 5 bash configs/teacher-recbole.sh 0 > runs/logs/teacher-rb-s0.log 2>&1 &
# A new session whose runs/ is empty starts from the resume kit (assets/resume/teacher-rb-sSEED);
# `bash configs/teacher-recbole.sh SEED save` refreshes the kit at the end of a session. `python -m bench.teacher`
# scores finished seeds on test beside the others (docs/lcrec.md).
set -euo pipefail
seed=${1:?usage: bash configs/teacher-recbole.sh SEED [save]}
workdir=runs/teacher-rb-s$seed
kit=assets/resume/teacher-rb-s$seed
source "$(dirname "$0")/resume-kit.sh"
if [ "${2:-}" = save ]; then
    kit_save "$workdir" "$kit"
    exit 0
fi
kit_restore "$kit" "$workdir"
python -m training build --config configs/ml-100k.yaml --workdir "$workdir" --stages data,cf \
    --set 'cf.models=[SASRec]' --set "cf.seeds=[$seed]" --set threads=1 --set cf.sasrec.patience=10 \
    --set cf.sasrec.window_stride=1 --set cf.sasrec.style=recbole
