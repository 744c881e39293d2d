#!/usr/bin/env bash
# Pre-trains the shipped mini T5 (prompt_tuning_jax/pretrained/t5_mini) on 2 CPU cores:
# the vocabulary, word vectors for its pieces (the token embedding, frozen from then on),
# T5 span corruption from scratch, then LM adaptation, each exported as a T5X checkpoint.
# Every stage resumes: rerun the same command after an interruption.
#
#   bash launch/pretrain_mini.sh WORK_DIR [SHARED_DIR]
#
# WORK_DIR holds the runs (WORK_DIR/init_t5x, WORK_DIR/span, WORK_DIR/lm); SHARED_DIR (default ../shared)
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

# The starting point: random weights, the token embedding from word vectors (PPMI + SVD
# of which pieces occur near which; the SST-2 sentences' counts weighed x4), frozen in
# both runs below (TRAINABLE_RULES: every weight but token_embedder/embedding).
if [[ ! -d "${WORK_DIR}/init_t5x" ]]; then
  echo "== word vectors -> ${WORK_DIR}/init_t5x"
  python -c "import sys; from prompt_tuning_jax import pretraining, tasks; \
vectors = tasks.train_word_vectors(sys.argv[3:], sys.argv[1], dim=128, weights=[1, 4]); \
print(pretraining.initial_checkpoint('t5_mini', sys.argv[2], word_vectors=vectors))" \
    "${VOCAB}" "${WORK_DIR}/init_t5x" "${SHARED}/corpus/english_debian_texts.txt.gz" "${SST2}"
fi

# MODEL_DIR -> MODEL_DIR_t5x (once): the whole model (frozen embedding included) as T5X.
export_t5x() {
  [[ -d "$1_t5x" ]] || ptj export --gin.MODEL_DIR="$1" --format t5x --output "$1_t5x"
}

common=(--gin_file=models/t5_mini.gin --gin.get_vocabulary.path="${VOCAB}"
        "--gin.TRAINABLE_RULES=('(encoder|decoder)/.*',)")

echo "== span corruption (${WORK_DIR}/span)"
ptj train "${common[@]}" --gin_file=runs/pretrain.gin \
  --gin.INITIAL_CHECKPOINT_PATH="${WORK_DIR}/init_t5x" --gin.MODEL_DIR="${WORK_DIR}/span" "${EXTRA[@]}"
export_t5x "${WORK_DIR}/span"

echo "== LM adaptation (${WORK_DIR}/lm)"
ptj train "${common[@]}" --gin_file=runs/lm_adapt.gin \
  --gin.INITIAL_CHECKPOINT_PATH="${WORK_DIR}/span_t5x" --gin.MODEL_DIR="${WORK_DIR}/lm" "${EXTRA[@]}"
export_t5x "${WORK_DIR}/lm"
echo "== done: ${WORK_DIR}/span_t5x (span corruption), ${WORK_DIR}/lm_t5x (LM-adapted)"
# The shipped files are bfloat16 copies of these two (checkpoints.save_t5x(
# checkpoints.load_t5x(src), dst, dtype='bfloat16')) and the runs' config.gin,
# metrics.jsonl and this script's log, in prompt_tuning_jax/pretrained/t5_mini/.
