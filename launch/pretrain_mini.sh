#!/usr/bin/env bash
# Pre-trains the shipped mini T5 (prompt_tuning_jax/pretrained/t5_mini) on 2 CPU cores:
# the vocabulary, T5 span corruption from scratch, then LM adaptation, each exported as
# a T5X checkpoint. Every stage resumes: rerun the same command after an interruption.
#
#   bash launch/pretrain_mini.sh WORK_DIR [SHARED_DIR]
#
# WORK_DIR holds the runs (WORK_DIR/span, WORK_DIR/lm); SHARED_DIR (default ../shared)
# holds the corpus and SST-2. Extra gin flags: PTJ_PRETRAIN_FLAGS, e.g.
# PTJ_PRETRAIN_FLAGS="--gin.TRAIN_STEPS=20" for a rehearsal.
set -euo pipefail

WORK_DIR="${1:?usage: launch/pretrain_mini.sh WORK_DIR [SHARED_DIR]}"
SHARED="${2:-$(dirname "$0")/../../shared}"
OUT="${PTJ_PRETRAINED_DIR:-$(dirname "$0")/../prompt_tuning_jax/pretrained/t5_mini}"
VOCAB="${OUT}/spiece.model"
read -r -a EXTRA <<< "${PTJ_PRETRAIN_FLAGS:-}"

# The corpus: 9.8M words of English (shuffled by the task), plus the unlabeled
# sentences of the SST-2 train split, listed twice to weigh the review domain up.
SST2="${SHARED}/data/glue/SST-2/train.tsv::sentence"
export PTJ_CORPUS="${SHARED}/corpus/english_debian_texts.txt.gz,${SST2},${SST2}"

if [[ ! -f "${VOCAB}" ]]; then
  echo "== vocabulary -> ${VOCAB}"
  python -c "import sys; from prompt_tuning_jax import tasks; \
tasks.train_vocabulary(sys.argv[2:], sys.argv[1], vocab_size=8000)" \
    "${VOCAB}" "${SHARED}/corpus/english_debian_texts.txt.gz" "${SST2}"
fi

# MODEL_DIR -> MODEL_DIR_t5x (once): the run's weights as a T5X checkpoint.
export_t5x() {
  [[ -d "$1_t5x" ]] || python -c "import sys; \
from prompt_tuning_jax.checkpoints import train_state; \
print(train_state.export_t5x(sys.argv[1], sys.argv[2]))" "$1" "$1_t5x"
}

common=(--gin_file=models/t5_mini.gin --gin.get_vocabulary.path="${VOCAB}")

echo "== span corruption from scratch (${WORK_DIR}/span)"
ptj train "${common[@]}" --gin_file=runs/pretrain.gin --gin.INITIAL_CHECKPOINT_PATH=None \
  --gin.MODEL_DIR="${WORK_DIR}/span" "${EXTRA[@]}"
export_t5x "${WORK_DIR}/span"

echo "== LM adaptation (${WORK_DIR}/lm)"
ptj train "${common[@]}" --gin_file=runs/lm_adapt.gin \
  --gin.INITIAL_CHECKPOINT_PATH="${WORK_DIR}/span_t5x" --gin.MODEL_DIR="${WORK_DIR}/lm" "${EXTRA[@]}"
export_t5x "${WORK_DIR}/lm"
echo "== done: ${WORK_DIR}/span_t5x (span corruption), ${WORK_DIR}/lm_t5x (LM-adapted)"
