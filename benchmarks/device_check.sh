#!/usr/bin/env bash
# The device check on a GPU machine (see benchmarks/device_check.py): wheels carried in .whl/
# (dask, zarr, ...: ../shared/tools/gpu-wheels) installed first when there are any, then the
# check with an overall limit; its JSON (and the JUnit XML) also copied to $OUT when that is set.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl \
    && export PYTHONPATH="$PWD/.site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
timeout 480 python3 benchmarks/device_check.py "$@"
status=$?
if [ -n "${OUT:-}" ]; then
  cp benchmarks/results/device_check_gpu.json bench_tmp/device_check_junit.xml "$OUT"/ 2>/dev/null || true
fi
exit $status
