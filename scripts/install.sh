#!/usr/bin/env bash
# Install only: create .venv and the pinned development environment (what main.sh and
# test.sh do first), then say how to run the installed command.
source "$(dirname "$0")/env.sh"
echo "installed: run .venv/bin/invertible, or 'source .venv/bin/activate' and then invertible"
