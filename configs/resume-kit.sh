# Resume kits for the long builds (sourced by configs/ml-1m-build.sh and configs/teacher-build.sh): a kit is a copy of
# a workdir's cf stage (finished runs and per-epoch checkpoints) kept in the repo, so that a session whose runs/ is
# gone continues where the last one stopped.

# kit_save WORKDIR KIT: replace the kit by the workdir's cf stage (the end of a session).
kit_save() {
    rm -rf "$2/cf" && mkdir -p "$2" && cp -r "$1/cf" "$2/"
    find "$2" -name '*.tmp' -delete
    echo "resume kit: $(du -sh "$2" | cut -f1) in $2"
}

# kit_restore KIT WORKDIR: copy the kit into the workdir, overwriting nothing newer there.
kit_restore() {
    if [ -d "$1/cf" ]; then
        mkdir -p "$2" && cp -rn "$1/cf" "$2/"
    fi
}
