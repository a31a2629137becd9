#!/usr/bin/env bash
# Runs benchmarks/ldm_vs_diffusers.py on a GPU host that has JAX, PyTorch and transformers but neither
# TensorFlow nor a network (the lent device machine), and keeps its output in OUT/<name>.txt.
#
#   bash benchmarks/run_on_gpu.sh OUT eager      # batches 1, 8, 32 and training at batch 64 (estimated 7-9 min)
#   bash benchmarks/run_on_gpu.sh OUT compiled   # the same generation against torch.compile'd diffusers
#
# Pure-Python wheels for Python 3.12 that the host lacks (keras, namex, optree, diffusers,
# importlib_metadata) are installed from ./.whl when that folder exists: fetch them beforehand with
#   pip download --python-version 3.12 --only-binary=:all: --no-deps -d .whl keras namex optree diffusers importlib_metadata
set -euo pipefail
out=$(realpath -m "${1:?usage: run_on_gpu.sh OUT eager|compiled}")
mode=${2:-eager}
case "$mode" in
  eager) args="--batches 1,8,32 --repeats 2 --train-batch 64 --train-steps 3" ;;
  compiled) args="--batches 1,8,32 --repeats 2 --train-batch 0 --diffusers-compile" ;;
  *) echo "mode must be eager or compiled, not $mode" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
mkdir -p "$out"
if [ -d .whl ]; then
  pip install -q --no-index --no-deps --target /tmp/keras_ldm_site .whl/*.whl
  export PYTHONPATH="/tmp/keras_ldm_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:$PYTHONPATH" KERAS_BACKEND=jax PYTHONUNBUFFERED=1  # jax before keras is imported
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
# shellcheck disable=SC2086
python3 benchmarks/ldm_vs_diffusers.py --device gpu $args 2>"$out/$mode.log" | tee "$out/$mode.txt"
