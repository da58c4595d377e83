#!/usr/bin/env bash
# The main job: fit the lecture's flows on the embedded `patches` data and write a report.
source "$(dirname "$0")/env.sh"
invertible lecture --out "${1:-runs/lecture}" --overwrite
