#!/usr/bin/env bash
# Splits the UCI HAR training set (../shared/data/uci-har/train) into one file per subject, as
# each device would hold only its own wearer's data. Output: OUT/subject-<id>.txt, whitespace-
# separated columns: subject, activity (1..6), then the 561 features. Idempotent.
set -euo pipefail
out=${1:?usage: prepare-har.sh OUTDIR [HAR_DIR]}
here=$(cd "$(dirname "$0")/.." && pwd)
har=${2:-$here/../shared/data/uci-har}
[ -f "$har/train/X_train.txt.xz" ] || { echo "prepare-har: no UCI HAR data at $har" >&2; exit 1; }
if [ -f "$out/.complete" ]; then exit 0; fi
mkdir -p "$out"
rm -f "$out"/subject-*.txt
paste -d' ' "$har/train/subject_train.txt" "$har/train/y_train.txt" \
  <(xz -dc "$har/train/X_train.txt.xz") |
  awk -v out="$out" '{ f = out "/subject-" $1 ".txt"; print > f }'
touch "$out/.complete"
