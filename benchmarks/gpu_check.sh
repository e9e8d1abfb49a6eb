#!/usr/bin/env bash
# The OpenCL backend on a real GPU in one bounded pass (about 8 minutes at most): build the C
# runtime, run tests/edge/test_opencl.py against the GPU, then the GPU benchmark
# (benchmarks/bench_opencl.py --gpu). Two steps:
#
#   bash benchmarks/gpu_check.sh prepare     # here, in the repository root, with network access:
#       .gpu-carry/ gets the ICD loader (this machine's libOpenCL.so.1, for a GPU machine without
#       one) and a cffi wheel for Python 3.12 (the binding's one runtime need that a CUDA image
#       may lack); cruntime/_edge_ffi.py is generated. Both paths are git-ignored: carry them.
#   bash benchmarks/gpu_check.sh run         # on the GPU machine, in the repository root:
#       writes check.log, pytest.log, junit.xml and the benchmark's opencl-gpu-*.{json,md} to $OUT
#       (default ./gpu-check-out). Exit status: the first failing step's (build, tests, benchmark).
#
# Each step has its own time limit (BUILD_S, TESTS_S, BENCH_S seconds; 90, 240, 180 by default).
# DRY_RUN=1 checks this script where there is no GPU: any OpenCL device, the benchmark's --dry-run;
# PYTEST_ARGS adds pytest arguments (a -k selection, a smaller -n).
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry
PYTHON=${PYTHON:-python3}

prepare() {
  mkdir -p "$CARRY"
  local loader
  loader=$(ldconfig -p | awk '/libOpenCL\.so\.1 /{print $NF; exit}')
  if [ -n "$loader" ]; then
    cp -L "$loader" "$CARRY/libOpenCL.so.1"
  else
    echo "no libOpenCL.so.1 here (apt-get install ocl-icd-libopencl1): the GPU machine must have its own" >&2
  fi
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$CARRY" "cffi==$("$PYTHON" -c 'import cffi; print(cffi.__version__)')" || exit 1
  PYTHONPATH=. "$PYTHON" cruntime/generate_ffi.py >/dev/null || exit 1
  du -sh "$CARRY"
  echo "carry: $CARRY cruntime/_edge_ffi.py; on the GPU machine: bash benchmarks/gpu_check.sh run"
}

run() {
  OUT=${OUT:-$PWD/gpu-check-out}
  mkdir -p "$OUT"
  exec > >(tee -a "$OUT/check.log") 2>&1
  local started=$SECONDS status=0
  echo "== $(date -u +%FT%TZ) $(uname -m), $(nproc) cores"
  nvidia-smi -L 2>&1 | head -4
  if ls "$CARRY"/*.whl >/dev/null 2>&1 && ! "$PYTHON" -c 'import cffi' 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu-check-site \
      "$CARRY"/*.whl || exit 1
    export PYTHONPATH=/tmp/gpu-check-site
  fi
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
  [ -f cruntime/_edge_ffi.py ] || "$PYTHON" cruntime/generate_ffi.py >/dev/null || exit 1

  echo "== build ($((SECONDS - started)) s)"
  timeout "${BUILD_S:-90}" make -C cruntime shared -j"$(nproc)" >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 3; }

  local loader=()
  ldconfig -p | grep -q 'libOpenCL\.so\.1 ' || [ ! -f "$CARRY/libOpenCL.so.1" ] || loader=(--opencl-loader "$CARRY/libOpenCL.so.1")
  local setup
  setup=$("$PYTHON" benchmarks/bench_opencl.py --opencl-env "${loader[@]}") || exit 1
  echo "$setup"
  eval "$setup"
  "$PYTHON" -c 'import edge.opencl
for d in edge.opencl.devices(): print("opencl device", d["index"], d["name"], d["type"], d["driver"], d["compute_units"], "CUs")'
  local dry=()
  [ "${DRY_RUN:-0}" = 1 ] && dry=(--dry-run)
  if [ ${#dry[@]} -eq 0 ] && ! "$PYTHON" -c 'import edge.opencl, sys
sys.exit(not any(d["type"] == "gpu" for d in edge.opencl.devices()))'; then
    echo "no OpenCL GPU: not running the GPU tests or benchmark"
    exit 4
  fi

  echo "== tests ($((SECONDS - started)) s): tests/edge/test_opencl.py on the first OpenCL GPU"
  timeout "${TESTS_S:-240}" "$PYTHON" -m pytest tests/edge/test_opencl.py -q -n 8 -p no:cacheprovider \
    --junitxml="$OUT/junit.xml" ${PYTEST_ARGS:-} >"$OUT/pytest.log" 2>&1
  status=$?
  grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest.log" | tail -25
  [ $status -eq 124 ] && echo "tests stopped at ${TESTS_S:-240} s"

  echo "== benchmark ($((SECONDS - started)) s)"
  timeout "${BENCH_S:-180}" "$PYTHON" benchmarks/bench_opencl.py --gpu "${dry[@]}" --out "$OUT" "${loader[@]}"
  local bench=$?
  [ $bench -eq 124 ] && echo "benchmark stopped at ${BENCH_S:-180} s"
  cat "$OUT"/opencl-gpu-*.md 2>/dev/null
  echo "== done in $((SECONDS - started)) s (tests $status, benchmark $bench)"
  [ $status -ne 0 ] && exit 5
  [ $bench -ne 0 ] && exit 6
  exit 0
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash benchmarks/gpu_check.sh prepare|run" >&2; exit 64 ;;
esac
