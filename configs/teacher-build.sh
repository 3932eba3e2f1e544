#!/usr/bin/env bash
# Issue 24's teacher candidates on ML-100k: SASRec trained as RecBole's SASRec is (window_stride 1: every prefix of a
# history is a window, its loss on the newest item), validated every epoch, patience 10; with TEACHER_STYLE=recbole
# (configs/teacher-recbole.sh) also RecBole's model (`cf.sasrec.style=recbole`: post-LayerNorm, embedding LayerNorm,
# positions from the oldest item; face_app/sequential.py). One seed per call, on one core; about 135 s an epoch on an
# AMD EPYC core. Every epoch is checkpointed, so after a cut the same call continues:
#   nohup taskset -c 1 nice -n 5 bash configs/teacher-build.sh 0 > runs/logs/teacher-s1-s0.log 2>&1 &
# A new session whose runs/ is empty starts from the resume kit (assets/resume/teacher-s1-sSEED, or teacher-rb-sSEED
# for the RecBole style), copied in without overwriting anything newer; `bash configs/teacher-build.sh SEED save`
# refreshes the kit at the end of a session. When seeds 0-2 are done, `python -m bench.teacher` scores them on test
# beside the shipped teacher (docs/lcrec.md).
set -euo pipefail
seed=${1:?usage: [TEACHER_STYLE=recbole] bash configs/teacher-build.sh SEED [save]}
case "${TEACHER_STYLE:-sasrec}" in
    sasrec) name=teacher-s1-s$seed; style=() ;;
    recbole) name=teacher-rb-s$seed; style=(--set cf.sasrec.style=recbole) ;;
    *) echo "TEACHER_STYLE is sasrec or recbole, not $TEACHER_STYLE" >&2; exit 2 ;;
esac
workdir=runs/$name
kit=assets/resume/$name
source "$(dirname "$0")/resume-kit.sh"
if [ "${2:-}" = save ]; then
    kit_save "$workdir" "$kit"
    exit 0
fi
kit_restore "$kit" "$workdir"
python -m training build --config configs/ml-100k.yaml --workdir "$workdir" --stages data,cf \
    --set 'cf.models=[SASRec]' --set "cf.seeds=[$seed]" --set threads=1 --set cf.sasrec.patience=10 \
    --set cf.sasrec.window_stride=1 "${style[@]}"
