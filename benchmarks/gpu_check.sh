#!/usr/bin/env bash
# Every GPU measurement of charlm in one command (see benchmarks/gpu_check.py for the steps and limits):
#   bash benchmarks/gpu_check.sh OUT_DIR            # on a CUDA GPU: 9 minutes at most
#   bash benchmarks/gpu_check.sh OUT_DIR --smoke    # the same code paths on the CPU, tiny (about a minute)
# PYTHON picks the interpreter (default python3: the one that has torch on the device machine); the repo's
# charlm is imported from this checkout. The corpora: $CHARLM_DATA_DIR, else data/, shared/data or ../shared/data.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--smoke] [--only STEP,...] [--work DIR]" >&2
  exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
