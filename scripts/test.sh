#!/usr/bin/env bash
# The test suite: lint, then unit/property tests and the doctests of the package.
source "$(dirname "$0")/env.sh"
ruff check src tests benchmarks
python -m pytest "$@"
