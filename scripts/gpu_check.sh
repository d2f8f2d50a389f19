#!/usr/bin/env bash
# The GPU check, as one prepared command for a machine with a CUDA GPU:
# the CUDA tests and the engine tests, then scripts/bench.py --device cuda with a profile of the
# backprop engine's step. About 3 minutes; each part has its own time limit, all within 5 minutes.
#
#   bash scripts/gpu_check.sh DATA_DIR        # DATA_DIR holds MNIST/raw (the four .gz files)
#
# It uses the python3 there and its own torch, and runs mnist-ffn from this checkout (PYTHONPATH),
# installing nothing into that python. Wheels in .whl/ (e.g. a newer typer) go to /tmp/site first.
# It needs a CUDA machine, a Python with torch (CUDA build), Pillow, rich, tqdm and typer, and the data folder.
# Results: tests.txt, bench.txt and bench-cuda.json in $OUT, or ./gpu-check.
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:-${MNIST_FFN_DATA:-data}}
out=${OUT:-gpu-check}
python=${PYTHON:-python3}
mkdir -p "$out"

if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MNIST_FFN_DATA="$data"
export MNIST_FFN_TEST_CUDA=1  # the tests hide the GPU otherwise (tests/conftest.py)
MNIST_FFN_CACHE=$(mktemp -d)
export MNIST_FFN_CACHE

"$python" - <<'EOF' || exit 1
try:  # what mnist-ffn needs, before anything long starts
    import PIL, rich, torch, tqdm, typer
except ImportError as exc:
    raise SystemExit(f"gpu_check: {exc}; install it, or put its wheel in .whl/")
if not torch.cuda.is_available():
    raise SystemExit("gpu_check: torch sees no CUDA device")
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, typer {typer.__version__}")
EOF

status=0
timeout 120 "$python" -m pytest -q -p no:cacheprovider tests/test_devices.py tests/test_backprop.py 2>&1 | tee "$out/tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout 170 "$python" scripts/bench.py --device cuda --data-dir "$data" --rounds 2 --canonical-samples 6400 --profile \
    --json-out "$out/bench-cuda.json" 2>&1 | grep -v -e '^USDT' -e 'gpuGetDeviceCount' | tee "$out/bench.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
