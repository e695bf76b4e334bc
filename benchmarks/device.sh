#!/usr/bin/env bash
# One run on a GPU machine (issue 25): environment, wheels + database, the CUDA tests, the GPU
# figures (benchmarks/gpu.py), then the rest of the test suite in the time left.
#
#   bash benchmarks/device.sh                  # on the device, from the repository root
#   DEVICE_TINY=1 SKIP_WHEELS=1 PY=.venv/bin/python OUT=/tmp/gpuout bash benchmarks/device.sh
#                                              # dry run on a CPU: tiny sizes, this venv
#
# The device has python3 with torch but not datajoint & co: SKIP_WHEELS unset, the wheels in .whl/
# (carried there, git-ignored) are installed into /tmp/site. PostgreSQL comes from the pgserver
# wheel; as root v1twin runs it as the 'postgres' system user, created here if missing.
# Every section runs under its own time limit; the whole run stays under BUDGET seconds (420).
# Writes under $OUT (at most 8 files): env.log setup.log tests_cuda.log gpu.log gpu.json
# suite.log summary.txt. The last lines printed are the summary.
set -u
OUT=${OUT:?set OUT to the output folder}
PY=${PY:-python3}
TINY=${DEVICE_TINY:-0}
BUDGET=${BUDGET:-420}
mkdir -p "$OUT"
START=$(date +%s)
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5
export V1TWIN_HOME=${V1TWIN_HOME:-/tmp/v1twin-home}
TINYFLAG=""
[ "$TINY" = 1 ] && TINYFLAG="--tiny"

elapsed() { echo $(($(date +%s) - START)); }

# section NAME LIMIT LOG CMD...: run CMD under `timeout LIMIT` (x LIMIT_SCALE, for slow dry runs;
# signal SECTION_SIGNAL, default TERM), output appended to LOG; one line of the summary with its
# exit code (124: time limit) and seconds.
section() {
    local name=$1 limit=$(($2 * ${LIMIT_SCALE:-1})) log=$3 t0 rc before
    shift 3
    t0=$(date +%s)
    touch "$log"
    before=$(wc -l <"$log")
    echo "=== [$(elapsed)s] $name (limit ${limit}s)" | tee -a "$log"
    timeout -k 10 -s "${SECTION_SIGNAL:-TERM}" "$limit" "$@" >>"$log" 2>&1
    rc=$?
    printf '%-22s rc=%-3s %4ss  (at %ss)\n' "$name" "$rc" $(($(date +%s) - t0)) "$(elapsed)" |
        tee -a "$SUMMARY"
    tail -n +$((before + 2)) "$log" | tail -n 4
    return $rc
}

# 1. Environment ---------------------------------------------------------------------------------
{
    date -u
    nvidia-smi -L || echo "no nvidia-smi"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
    nproc
    $PY -c 'import sys, torch, numpy; print(sys.version); print("torch", torch.__version__,
"cuda", torch.version.cuda, "available", torch.cuda.is_available(), "cudnn",
torch.backends.cudnn.version(), "numpy", numpy.__version__);
print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")'
    command -v runuser useradd || true
} >"$OUT/env.log" 2>&1
cat "$OUT/env.log"

# 2. Wheels and the database ------------------------------------------------------------------
setup() {
    set -e
    if [ "${SKIP_WHEELS:-0}" != 1 ]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
        chmod -R a+rX /tmp/site
        export V1TWIN_PG_BIN=/tmp/site/pgserver/pginstall/bin
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd -r -M -U -s /bin/false postgres ||
            { echo 'postgres:x:26:26::/tmp:/bin/false' >>/etc/passwd &&
                echo 'postgres:x:26:' >>/etc/group; }
    fi
    id postgres || true
    echo "V1TWIN_PG_BIN=${V1TWIN_PG_BIN:-} V1TWIN_HOME=$V1TWIN_HOME"
    mkdir -p "$V1TWIN_HOME" && chmod 755 "$V1TWIN_HOME"
    $PY -c 'import datajoint, psycopg2, openTSNE, h5netcdf; from v1twin import server;
print("datajoint", datajoint.__version__, "pg binaries", server.find_binaries())'
    $PY -m v1twin.cli db start
    $PY -m v1twin.cli db status
}
[ "${SKIP_WHEELS:-0}" != 1 ] && export PYTHONPATH=/tmp/site:$PWD V1TWIN_PG_BIN=/tmp/site/pgserver/pginstall/bin
export PYTHONPATH=${PYTHONPATH:-$PWD}
section setup 90 "$OUT/setup.log" bash -c "$(declare -f setup); setup"

# 3. The CUDA tests ------------------------------------------------------------------------------
PYTEST="$PY -m pytest -q -p no:cacheprovider -ra"
section tests_cuda 180 "$OUT/tests_cuda.log" $PYTEST tests/test_cuda.py \
    tests/test_simulator.py::test_runs_on_cuda tests/test_stimuli.py::test_runs_on_cuda

# 4. GPU figures: each part appends to gpu.json as it goes -------------------------------------
GPU="env TQDM_DISABLE=1 $PY benchmarks/gpu.py --out $OUT/gpu.json $TINYFLAG"
rm -f "$OUT/gpu.json"
section gpu_peak 30 "$OUT/gpu.log" $GPU --part peak
section gpu_train 60 "$OUT/gpu.log" $GPU --part train
section gpu_align 100 "$OUT/gpu.log" $GPU --part align
section gpu_insilico 80 "$OUT/gpu.log" $GPU --part insilico
section gpu_mei 60 "$OUT/gpu.log" $GPU --part mei --mei-seconds 30

# 5. The rest of the suite in the time left (notebook tests need nbclient: not on the device;
# the version test needs an installed package) ----------------------------------------------
LEFT=$((BUDGET - $(elapsed) - 15))
if [ "$LEFT" -gt 30 ]; then
    XDIST=""
    $PY -c 'import xdist' 2>/dev/null && XDIST="-n ${SUITE_WORKERS:-8} --dist loadfile"
    # SIGINT at the limit: pytest stops and still prints what passed and failed
    # with -v (xdist: one "[gwN] PASSED test" line each) a cut-off run still lists its results
    SECTION_SIGNAL=INT section suite "$LEFT" "$OUT/suite.log" ${PYTEST/ -q/} -v $XDIST \
        --ignore tests/test_cuda.py \
        --deselect tests/test_pipeline.py::test_report_export_and_notebook_on_pipeline_data \
        --deselect tests/test_report.py::test_notebook_runs_headless \
        --deselect tests/test_cli_progress.py::test_version_is_the_package_version ${SUITE:-tests}
else
    echo "suite: skipped, ${LEFT}s left" | tee -a "$SUMMARY"
fi

timeout 20 $PY -m v1twin.cli db stop >>"$OUT/setup.log" 2>&1

# Summary ------------------------------------------------------------------------------------------
{
    echo
    echo "=== SUMMARY ($(elapsed)s in all; rc 124 = hit its time limit)"
    cat "$SUMMARY"
    for log in tests_cuda suite; do
        [ -f "$OUT/$log.log" ] || continue
        echo "--- $log:"
        grep -E "(^| )(FAILED|ERROR) " "$OUT/$log.log" | cut -c1-160 | sort -u | head -n 25
        grep -E "^SKIPPED" "$OUT/$log.log" | cut -c1-160 | head -n 12
        for word in PASSED FAILED SKIPPED ERROR; do
            printf '%s=%s ' "$word" "$(grep -cE "(\] | )$word( |$)" "$OUT/$log.log")"
        done
        echo "(-v lines)"
        grep -E "(passed|failed|error|skipped|no tests ran)" "$OUT/$log.log" | tail -n 1
    done
    timeout 30 $GPU --part summary
} 2>&1 | tee -a "$SUMMARY"
