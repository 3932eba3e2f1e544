# Resume kits for the long builds (sourced by configs/ml-1m-build.sh and configs/teacher-build.sh): a kit is a copy of
# a workdir's cf stage (finished runs and per-epoch checkpoints), of its face and index stages once they are done
# (their outputs and done markers; neither is resumable mid-stage) and of a running tune's checkpoint and best step,
# kept in the repo, so that a session whose runs/ is gone continues where the last one stopped.
KIT_STAGES="cf face index"

# kit_save WORKDIR KIT: replace the kit by the workdir's cf stage, its finished face and index stages and its tune's
# checkpoint (the end of a session).
kit_save() {
    mkdir -p "$2"
    for stage in $KIT_STAGES; do
        if [ "$stage" = cf ] || [ -f "$1/$stage/.done" ]; then
            rm -rf "${2:?}/$stage" && cp -r "$1/$stage" "$2/"
        fi
    done
    # A running tune resumes from its checkpoint and keeps its best step (`tune/checkpoint`, `tune/best`).
    for part in checkpoint best; do
        if [ -d "$1/tune/$part" ]; then
            rm -rf "${2:?}/tune/$part" && mkdir -p "$2/tune" && cp -r "$1/tune/$part" "$2/tune/"
        fi
    done
    find "$2" -name '*.tmp' -delete
    echo "resume kit: $(du -sh "$2" | cut -f1) in $2"
}

# kit_restore KIT WORKDIR: copy the kit into the workdir, overwriting nothing newer there.
kit_restore() {
    for stage in $KIT_STAGES tune; do
        if [ -d "$1/$stage" ]; then
            mkdir -p "$2" && cp -rn "$1/$stage" "$2/"
        fi
    done
}
