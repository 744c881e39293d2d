#!/usr/bin/env bash
# The local smoke run: prompt tuning end to end on this machine's CPU, offline.
#
#   bash launch/local.sh [MODEL_DIR] [extra ptj flags...]
#
# Trains a prompt for a tiny byte-level T5 whose frozen weights are RANDOM (no
# download), on the generated smoke_sentiment task (tasks/smoke.py), then
# evaluates it and writes predictions. Extra flags go to all three commands,
# e.g. --gin.TRAIN_STEPS=60 for a shorter run. Rerunning the same command
# resumes (and, once finished, only re-evaluates and re-predicts).
set -euo pipefail

MODEL_DIR="${1:-${TMPDIR:-/tmp}/ptj_smoke}"
shift || true

echo "== ptj train (MODEL_DIR=${MODEL_DIR})"
ptj train --gin_file=runs/smoke.gin --gin.MODEL_DIR="${MODEL_DIR}" "$@"
echo "== ptj eval"
ptj eval --gin.MODEL_DIR="${MODEL_DIR}" "$@"
echo "== ptj infer"
ptj infer --gin.MODEL_DIR="${MODEL_DIR}" --gin.INFER_SPLIT=test "$@"
echo "== first predictions (${MODEL_DIR}/inference/):"
head -n 3 "${MODEL_DIR}"/inference/smoke_sentiment_test_step*.jsonl
