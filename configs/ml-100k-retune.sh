#!/usr/bin/env bash
# Issue 24: the ML-100k LLM re-derived from a stronger teacher. The item codes (index stage), the `<taste>` token and
# the distillation all read the cf stage's SASRec seed 0 (`training.tune.load_teacher`), so a new teacher means a new
# index and a new tune (one whole pass, as configs/ml-100k.yaml sets it), then the eval stage's report, in a workdir of
# its own beside the shipped build's:
#   nohup taskset -c 1 nice -n 5 bash configs/ml-100k-retune.sh stride1 > runs/logs/retune-stride1.log 2>&1 &
# TEACHER is `stride1` (configs/teacher-build.sh's runs: RecBole's training, the project's SASRec) or `recbole`
# (configs/teacher-recbole.sh's: RecBole's training and model). Its three seeds' finished runs are taken from their
# workdirs (runs/teacher-s1-sK, runs/teacher-rb-sK) or kits, Pop and LightGCN from the shipped build's (their settings
# are unchanged, so the cf stage reuses them all and trains only what is missing). Every step resumes after a cut
# (the tune per checkpoint); `bash configs/ml-100k-retune.sh TEACHER save` refreshes the kit at the end of a session.
# When the tune has finished: `python -m training build --config configs/ml-100k.yaml --workdir WORKDIR --stages
# eval` with the same --set lines, and the report's served-path rows against the shipped bundle's (docs/lcrec.md).
# The LLM row's spread: the same with `TUNE_SEED=1` and `TUNE_SEED=2` in the environment (`tune.seed`; workdirs
# runs/ml-100k-TEACHER-tune1 and -tune2, the same cf runs, face and index).
set -euo pipefail
teacher=${1:?usage: [TUNE_SEED=N] bash configs/ml-100k-retune.sh stride1|recbole [save]}
tune_seed=${TUNE_SEED:-0}
case "$teacher" in
    stride1) teacher_runs=teacher-s1-s; sets=() ;;
    recbole) teacher_runs=teacher-rb-s; sets=(--set cf.sasrec.style=recbole) ;;
    *) echo "the teacher is stride1 or recbole, not $teacher" >&2; exit 2 ;;
esac
suffix=$([ "$tune_seed" = 0 ] && echo "" || echo "-tune$tune_seed")
workdir=runs/ml-100k-$teacher$suffix
kit=assets/resume/ml-100k-$teacher$suffix
sets+=(--set "tune.seed=$tune_seed")
source "$(dirname "$0")/resume-kit.sh"
if [ "${2:-}" = save ]; then
    kit_save "$workdir" "$kit"
    exit 0
fi
kit_restore "$kit" "$workdir"
build() {
    python -m training build --config configs/ml-100k.yaml --workdir "$workdir" --set threads=1 --set tune.threads=1 \
        --set cf.sasrec.window_stride=1 --set cf.sasrec.patience=10 "${sets[@]}" "$@"
}
build --stages data
# The finished runs this build reuses, copied in without overwriting anything there.
for seed in 0 1 2; do
    for source in "runs/$teacher_runs$seed" "assets/resume/$teacher_runs$seed"; do
        if [ -f "$source/cf/SASRec/seed$seed/run.json" ]; then
            mkdir -p "$workdir/cf/SASRec" && cp -rn "$source/cf/SASRec/seed$seed" "$workdir/cf/SASRec/"
            break
        fi
    done
done
for model in Pop LightGCN; do
    for source in runs/ml-100k assets/resume/ml-100k; do
        if [ -d "$source/cf/$model" ]; then
            mkdir -p "$workdir/cf" && cp -rn "$source/cf/$model" "$workdir/cf/"
            break
        fi
    done
done
build --stages cf
# A second or third tune seed reads the same face and index stages as the first (their hashes leave out the tune).
if [ "$tune_seed" != 0 ]; then
    for stage in face index; do
        first=runs/ml-100k-$teacher/$stage
        if [ -f "$first/.done" ] && [ ! -e "$workdir/$stage" ]; then cp -r "$first" "$workdir/"; fi
    done
fi
build --stages face,index,tune
