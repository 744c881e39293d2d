#!/usr/bin/env bash
# Pre-trains the shipped decoder-only mini LM (prompt_tuning_jax/pretrained/decoder_mini)
# on 2 CPU cores with t5_mini's corpus, vocabulary and frozen word-vector embedding:
# the prefix-LM objective from scratch (runs/pretrain_prefix_lm.gin), then LM adaptation
# as t5_mini (runs/lm_adapt.gin: short continuations), each exported as a T5X checkpoint.
# Every stage resumes: rerun the same command after an interruption.
#
#   bash launch/pretrain_decoder_mini.sh WORK_DIR [SHARED_DIR]
#
# WORK_DIR holds the runs (WORK_DIR/init_t5x, WORK_DIR/prefix_lm, WORK_DIR/lm); SHARED_DIR
# (default ../shared) holds the corpus and SST-2. Extra gin flags: PTJ_PRETRAIN_FLAGS, e.g.
# PTJ_PRETRAIN_FLAGS="--gin.TRAIN_STEPS=20" for a rehearsal.
set -euo pipefail

WORK_DIR="${1:?usage: launch/pretrain_decoder_mini.sh WORK_DIR [SHARED_DIR]}"
SHARED="${2:-$(dirname "$0")/../../shared}"
# t5_mini's vocabulary (launch/pretrain_mini.sh trained it).
VOCAB="$(dirname "$0")/../prompt_tuning_jax/pretrained/t5_mini/spiece.model"
read -r -a EXTRA <<< "${PTJ_PRETRAIN_FLAGS:-}"

# t5_mini's corpus: 9.8M words of English plus the SST-2 train sentences, twice.
SST2="${SHARED}/data/glue/SST-2/train.tsv::sentence"
export PTJ_CORPUS="${SHARED}/corpus/english_debian_texts.txt.gz,${SST2},${SST2}"

# Random weights, the token embedding from t5_mini's word vectors (the same PPMI + SVD,
# the same weights), frozen in both runs below.
if [[ ! -d "${WORK_DIR}/init_t5x" ]]; then
  echo "== word vectors -> ${WORK_DIR}/init_t5x"
  python -c "import sys; from prompt_tuning_jax import pretraining, tasks; \
vectors = tasks.train_word_vectors(sys.argv[3:], sys.argv[1], dim=128, weights=[1, 4]); \
print(pretraining.initial_checkpoint('decoder_mini', sys.argv[2], word_vectors=vectors))" \
    "${VOCAB}" "${WORK_DIR}/init_t5x" "${SHARED}/corpus/english_debian_texts.txt.gz" "${SST2}"
fi

export_t5x() {
  [[ -d "$1_t5x" ]] || ptj export --gin.MODEL_DIR="$1" --format t5x --output "$1_t5x"
}

common=(--gin_file=models/decoder_mini.gin --gin.get_vocabulary.path="${VOCAB}"
        "--gin.TRAINABLE_RULES=('decoder/(layers_|relpos_bias|decoder_norm).*',)")

echo "== prefix LM (${WORK_DIR}/prefix_lm)"
ptj train "${common[@]}" --gin_file=runs/pretrain_prefix_lm.gin \
  --gin.INITIAL_CHECKPOINT_PATH="${WORK_DIR}/init_t5x" --gin.MODEL_DIR="${WORK_DIR}/prefix_lm" \
  "${EXTRA[@]}"
export_t5x "${WORK_DIR}/prefix_lm"

echo "== LM adaptation (${WORK_DIR}/lm)"
ptj train "${common[@]}" --gin_file=runs/lm_adapt.gin \
  --gin.INITIAL_CHECKPOINT_PATH="${WORK_DIR}/prefix_lm_t5x" --gin.MODEL_DIR="${WORK_DIR}/lm" \
  "${EXTRA[@]}"
export_t5x "${WORK_DIR}/lm"
echo "== done: ${WORK_DIR}/prefix_lm_t5x (prefix LM), ${WORK_DIR}/lm_t5x (LM-adapted)"
# The shipped files are bfloat16 copies (checkpoints.save_t5x(checkpoints.load_t5x(src),
# dst, dtype='bfloat16')) and the runs' config.gin, metrics.jsonl and this script's log,
# in prompt_tuning_jax/pretrained/decoder_mini/. Shipped on 2026-12-07: prefix_lm only,
# the prefix-LM run stopped (SIGTERM) at step 451 of 1800 for time.
