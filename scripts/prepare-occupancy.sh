#!/usr/bin/env bash
# Splits the UCI Occupancy training file (../shared/data/uci-occupancy-detection/datatraining.txt)
# into one CSV per day, as a building's per-day sensor logs would be held by separate devices:
# OUT/day-YYYY-MM-DD.csv, each with the original header. Idempotent.
set -euo pipefail
out=${1:?usage: prepare-occupancy.sh OUTDIR [OCCUPANCY_DIR]}
here=$(cd "$(dirname "$0")/.." && pwd)
src=${2:-$here/../shared/data/uci-occupancy-detection}
[ -f "$src/datatraining.txt" ] || { echo "prepare-occupancy: no data at $src" >&2; exit 1; }
if [ -f "$out/.complete" ]; then exit 0; fi
mkdir -p "$out"
rm -f "$out"/day-*.csv
# Rows look like "1","2015-02-04 17:51:00",23.18,...: the day is characters 2-11 of field 2.
awk -F, -v out="$out" 'NR == 1 { header = $0; next }
  { day = substr($2, 2, 10); f = out "/day-" day ".csv"
    if (!(f in seen)) { print header > f; seen[f] = 1 }
    print >> f }' "$src/datatraining.txt"
touch "$out/.complete"
