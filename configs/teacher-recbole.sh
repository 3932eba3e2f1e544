#!/usr/bin/env bash
# Issue 24's second teacher candidate: configs/teacher-build.sh with RecBole's model as well (`cf.sasrec.style=recbole`;
# runs/teacher-rb-sSEED, kit assets/resume/teacher-rb-sSEED). The same arguments:
#   nohup taskset -c 1 nice -n 5 bash configs/teacher-recbole.sh 0 > runs/logs/teacher-rb-s0.log 2>&1 &
TEACHER_STYLE=recbole exec bash "$(dirname "$0")/teacher-build.sh" "$@"
