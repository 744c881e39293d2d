#!/usr/bin/env bash
# The local smoke run: prompt tuning end to end on this machine's CPU, offline.
#
#   bash launch/local.sh [--processes N] [--devices_per_process D] [--run FILE] [MODEL_DIR]
#                        [extra ptj flags...]
#
# Trains a prompt with the run FILE (default runs/smoke_pretrained.gin: the shipped
# pre-trained t5_mini, frozen, on the generated smoke_sentiment_transfer task,
# tasks/smoke.py; runs/smoke.gin is the faster machinery check on a tiny random
# byte-level T5), then evaluates it and writes predictions of the test split.
# Nothing is downloaded. Extra flags go to all three commands, e.g.
# --gin.TRAIN_STEPS=60 for a shorter run. Rerunning the same command resumes
# (and, once finished, only re-evaluates and re-predicts).
#
# Rehearsing a pod run: --processes N runs each command as N processes on this
# machine, joined by jax.distributed as the hosts of a pod slice are
# (JAX_COORDINATOR_ADDRESS on a free local port, JAX_NUM_PROCESSES,
# JAX_PROCESS_ID), each process seeing D fake CPU devices (default 2). Every
# output line is prefixed with its process, [p0] .. [pN-1]. If one process
# fails, the others are stopped. Same seed and batch size: the same prompt as
# one process (the batches do not depend on the number of processes).
set -euo pipefail

PROCESSES=1
DEVICES_PER_PROCESS=2
RUN=runs/smoke_pretrained.gin
while (($#)); do
  case "$1" in
    --run) RUN=${2:?--run needs a gin file}; shift 2 ;;
    --processes) PROCESSES=${2:?--processes needs a value}; shift 2 ;;
    --devices_per_process) DEVICES_PER_PROCESS=${2:?--devices_per_process needs a value}; shift 2 ;;
    *) break ;;
  esac
done
[[ "$PROCESSES" =~ ^[1-9][0-9]*$ && "$DEVICES_PER_PROCESS" =~ ^[1-9][0-9]*$ ]] || {
  echo "local.sh: --processes and --devices_per_process must be positive integers" >&2
  exit 2
}
MODEL_DIR="${1:-${TMPDIR:-/tmp}/ptj_smoke}"
shift || true

# Runs `ptj "$@"` as $PROCESSES processes (one plain process when 1); fails if any fails.
workers() {
  if ((PROCESSES == 1)); then
    ptj "$@"
    return
  fi
  local port i pid finished
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local -A running=()
  for ((i = 0; i < PROCESSES; i++)); do
    JAX_COORDINATOR_ADDRESS="127.0.0.1:${port}" JAX_NUM_PROCESSES="$PROCESSES" JAX_PROCESS_ID="$i" \
      XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS}" \
      ptj "$@" > >(sed -u "s/^/[p${i}] /") 2>&1 &
    running[$!]=$i
  done
  while ((${#running[@]})); do
    if wait -n -p finished "${!running[@]}"; then
      unset "running[$finished]"
      continue
    fi
    echo "local.sh: process ${running[$finished]} of 'ptj $1' failed; stopping the others" >&2
    unset "running[$finished]"
    for pid in "${!running[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait "${!running[@]}" || true
    return 1
  done
}

echo "== ptj train (MODEL_DIR=${MODEL_DIR}, ${PROCESSES} process(es))"
workers train --gin_file="${RUN}" --gin.MODEL_DIR="${MODEL_DIR}" "$@"
echo "== ptj eval"
workers eval --gin.MODEL_DIR="${MODEL_DIR}" "$@"
echo "== ptj infer"
workers infer --gin.MODEL_DIR="${MODEL_DIR}" --gin.INFER_SPLIT=test "$@"
echo "== first predictions (${MODEL_DIR}/inference/):"
head -n 3 "${MODEL_DIR}"/inference/*_test_step*.jsonl
