#!/usr/bin/env bash
# Parallel WaveNet on speech: WaveNet teacher, distilled IAF student, report with tables,
# WAVs and spectrograms in runs/speech (30 minutes of training on 2 CPU threads, plus about
# 5 minutes of evaluation). Extra flags go to `invertible speech`.
source "$(dirname "$0")/env.sh"
invertible speech --out "${1:-runs/speech}" --budget-minutes 30 --threads 2 --overwrite "${@:2}"
