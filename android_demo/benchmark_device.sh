#!/usr/bin/env bash
# Benchmark a converted model on an ARM device with Larq Compute Engine's benchmark binary.
#
#   android_demo/benchmark_device.sh adb MODEL.tflite LCE_BENCHMARK_BINARY [THREADS...]
#   android_demo/benchmark_device.sh ssh MODEL.tflite LCE_BENCHMARK_BINARY USER@HOST [THREADS...]
#
# LCE_BENCHMARK_BINARY is `lce_benchmark_model` built for the device (LCE's releases ship it
# for Android arm64 and aarch64 Linux, e.g. a Raspberry Pi 4 with a 64-bit OS; or build it
# with LCE's bazel targets). It prints one line of JSON per thread count:
#   {"threads": 1, "init_ms": ..., "first_ms": ..., "warmup_ms": ..., "inference_ms": ...}
set -euo pipefail
usage() { sed -n '4,5p' "$0" >&2; exit 2; }
[ "$#" -ge 3 ] || usage
via=$1 model=$2 binary=$3; shift 3
[ -f "$model" ] || { echo "error: no model file $model" >&2; exit 2; }
[ -f "$binary" ] || { echo "error: no benchmark binary $binary" >&2; exit 2; }
case "$via" in
  adb)
    command -v adb >/dev/null || { echo "error: adb not found (Android platform-tools)" >&2; exit 2; }
    dir=/data/local/tmp
    adb push "$binary" "$dir/lce_benchmark_model" >/dev/null
    adb shell chmod +x "$dir/lce_benchmark_model"
    adb push "$model" "$dir/model.tflite" >/dev/null
    run() { adb shell "$dir/lce_benchmark_model" "$@"; }
    ;;
  ssh)
    [ "$#" -ge 1 ] || usage
    host=$1; shift
    dir=/tmp/tfquant_bench
    ssh "$host" mkdir -p "$dir"
    scp -q "$binary" "$host:$dir/lce_benchmark_model"
    scp -q "$model" "$host:$dir/model.tflite"
    run() { ssh "$host" "$dir/lce_benchmark_model" "$@"; }
    ;;
  *) usage ;;
esac
threads=("$@"); [ "${#threads[@]}" -gt 0 ] || threads=(1 4)
py=python3; [ -x "$(dirname "$0")/../.venv/bin/python" ] && py="$(dirname "$0")/../.venv/bin/python"
for n in "${threads[@]}"; do
  out=$(run --graph="$dir/model.tflite" --num_threads="$n" --use_indirect_bgemm=true 2>&1)
  printf '%s' "$out" | "$py" -c '
import json, sys
from tfquant.converters.bench import parse_benchmark_output
print(json.dumps({"threads": int(sys.argv[1]), **parse_benchmark_output(sys.stdin.read())}))' "$n"
done
