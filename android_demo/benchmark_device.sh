#!/usr/bin/env bash
# A thin wrapper of `tfquant bench` for a phone or a board (see README.md beside it):
#
#   android_demo/benchmark_device.sh DEVICE MODEL LCE_BENCHMARK_BINARY [THREADS] [MORE OPTIONS]
#
# DEVICE: adb, adb:SERIAL or ssh:[USER@]HOST[:PORT]. MODEL: a .tflite or a .keras model (then
# converted here together with its float twin). THREADS: e.g. 1,2,4 (the default).
# Prints a Markdown table; exits 2 with a message on bad input or a failure on the device.
set -euo pipefail
if [ "$#" -lt 3 ]; then
  sed -n '4,5p' "$0" >&2
  exit 2
fi
device=$1 model=$2 binary=$3
shift 3
threads=(--threads 1,2,4)
if [ "$#" -gt 0 ] && [[ "$1" != -* ]]; then
  threads=(--threads "$1")
  shift
fi
here="$(cd "$(dirname "$0")" && pwd)"
tfquant=tfquant
if [ -x "$here/../.venv/bin/tfquant" ]; then tfquant="$here/../.venv/bin/tfquant"; fi
exec "$tfquant" bench "$model" --device "$device" --benchmark-binary "$binary" "${threads[@]}" "$@"
