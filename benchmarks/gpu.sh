#!/usr/bin/env bash
# The benchmarks on a GPU machine, JAX and PyTorch (the lent machine's image
# has no TensorFlow), in one run: `bash benchmarks/gpu.sh [OUT_DIR]`.
# Each benchmark writes its table to OUT_DIR/<name>.txt (stderr to
# OUT_DIR/errors.log); each has its own
# time limit, so that one that runs long leaves the others their time.
# Set PYTHON to the interpreter that has Keras, JAX and PyTorch.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_benchmarks}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ nvidia-smi -L; KERAS_BACKEND=jax $py -c 'import keras, jax, torch; print("keras", keras.__version__,
"jax", jax.__version__, jax.devices(), "torch", torch.__version__,
torch.cuda.is_available())'; } 2>&1 | tee "$out/machine.txt"

bench() {  # bench SECONDS FILE NAME ARGS...
  local limit=$1 file=$2 name=$3
  shift 3
  echo "=== $name $* (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$py" -m "benchmarks.$name" "$@" \
    >"$out/$file.txt" 2>>"$out/errors.log"
  echo "exit $? after $((SECONDS - start)) s"
  cat "$out/$file.txt"
  tail -3 "$out/errors.log"
}

both=(--backends jax torch)
bench 120 step_time step_time "${both[@]}" --repeats 3 --no-memory
bench 60 shared_trunk shared_trunk "${both[@]}" --repeats 3
bench 50 combine_step combine_step "${both[@]}" --tasks 2 8 --calls 200
for b in jax torch; do
  bench 140 "weighting_$b" weighting_step_time --backends $b --tasks 2 8
done
