#!/usr/bin/env bash
# Trains a prompt on a Cloud TPU VM (single host or pod slice) with `ptj train`.
#
# Creates the TPU VM if it does not exist (reuses it otherwise), installs the
# package on every worker, runs `ptj train` on all workers at once
# (--worker=all) and streams their output here (also saved under ./logs/).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh --name NAME --zone ZONE --model_dir gs://BUCKET/DIR \
         --gin_file FILE [--gin_file FILE ...] [options] [-- EXTRA_PTJ_ARGS...]

Required (flag or environment variable):
  --name NAME            TPU VM name                           (TPU_NAME)
  --zone ZONE            e.g. europe-west4-a                    (ZONE)
  --model_dir DIR        gs:// directory for checkpoints, logs  (MODEL_DIR)
  --gin_file FILE        gin file for ptj train, repeatable     (GIN_FILES, space-separated)

Options:
  --project PROJECT      GCP project (default: gcloud's)       (PROJECT)
  --accelerator TYPE     e.g. v3-8, v3-32, v4-64 (default v3-8) (ACCELERATOR_TYPE)
  --version VERSION      TPU VM runtime (default tpu-ubuntu2204-base) (RUNTIME_VERSION)
  --package SPEC         what to pip install on the workers: a local wheel
                         (copied to every worker) or a pip spec such as
                         git+https://github.com/ORG/prompt_tuning_jax.git
                         (default: a wheel built from this checkout)   (PACKAGE)
  --spot                 create the TPU VM as a Spot VM
  --skip_install         do not reinstall the package (workers already have it)
  --dry_run              pass --dry_run to ptj train (plan memory, no training)
  -h, --help             this text

Everything after `--` goes to `ptj train` unchanged, e.g.
  -- --gin.MIXTURE_OR_TASK_NAME="'super_glue_rte_v102'" --gin.NUM_PARTITIONS=8
EOF
}

die() { echo "tpu_vm.sh: $*" >&2; exit 1; }

TPU_NAME=${TPU_NAME:-}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
MODEL_DIR=${MODEL_DIR:-}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v3-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
PACKAGE=${PACKAGE:-}
read -r -a GIN_FILES <<< "${GIN_FILES:-}"
SPOT=0
SKIP_INSTALL=0
EXTRA_ARGS=()

while (($#)); do
  case "$1" in
    --name) TPU_NAME=${2:?--name needs a value}; shift 2 ;;
    --zone) ZONE=${2:?--zone needs a value}; shift 2 ;;
    --project) PROJECT=${2:?--project needs a value}; shift 2 ;;
    --model_dir) MODEL_DIR=${2:?--model_dir needs a value}; shift 2 ;;
    --gin_file) GIN_FILES+=("${2:?--gin_file needs a value}"); shift 2 ;;
    --accelerator) ACCELERATOR_TYPE=${2:?--accelerator needs a value}; shift 2 ;;
    --version) RUNTIME_VERSION=${2:?--version needs a value}; shift 2 ;;
    --package) PACKAGE=${2:?--package needs a value}; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --skip_install) SKIP_INSTALL=1; shift ;;
    --dry_run) EXTRA_ARGS+=(--dry_run); shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA_ARGS+=("$@"); break ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[[ -n "$TPU_NAME" ]] || die "--name (or TPU_NAME) is required; see --help"
[[ -n "$ZONE" ]] || die "--zone (or ZONE) is required; see --help"
[[ -n "$MODEL_DIR" ]] || die "--model_dir (or MODEL_DIR) is required; see --help"
[[ "$MODEL_DIR" == gs://* ]] || die "--model_dir must be a gs:// path (every worker writes there), got $MODEL_DIR"
((${#GIN_FILES[@]})) || die "at least one --gin_file (or GIN_FILES) is required; see --help"
command -v gcloud >/dev/null || die "gcloud is not installed (https://cloud.google.com/sdk/docs/install)"

GCLOUD_TPU=(gcloud compute tpus tpu-vm)
LOCATION=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && LOCATION+=(--project="$PROJECT")

# Runs a shell command on every worker of the TPU VM.
on_all_workers() {
  "${GCLOUD_TPU[@]}" ssh "$TPU_NAME" "${LOCATION[@]}" --worker=all --command="$1"
}

# 1. Create the TPU VM, or reuse it.
if "${GCLOUD_TPU[@]}" describe "$TPU_NAME" "${LOCATION[@]}" --format='value(state)' >/dev/null 2>&1; then
  state=$("${GCLOUD_TPU[@]}" describe "$TPU_NAME" "${LOCATION[@]}" --format='value(state)')
  echo "Reusing TPU VM $TPU_NAME (state $state)."
  [[ "$state" == READY ]] || die "TPU VM $TPU_NAME is $state, not READY; start it or pick another name"
else
  echo "Creating TPU VM $TPU_NAME ($ACCELERATOR_TYPE, $RUNTIME_VERSION) in $ZONE."
  create_args=(--accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
  ((SPOT)) && create_args+=(--spot)
  "${GCLOUD_TPU[@]}" create "$TPU_NAME" "${LOCATION[@]}" "${create_args[@]}"
fi
endpoints=$("${GCLOUD_TPU[@]}" describe "$TPU_NAME" "${LOCATION[@]}" \
  --format='value(networkEndpoints[].ipAddress)')
num_workers=$(grep -oE '[0-9]+(\.[0-9]+){3}' <<< "$endpoints" | wc -l)
echo "$TPU_NAME has $num_workers worker(s)."

# 2. Install the package (and JAX for TPUs) on every worker.
if ((!SKIP_INSTALL)); then
  if [[ -z "$PACKAGE" ]]; then
    repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    wheel_dir=$(mktemp -d)
    echo "Building a wheel from $repo_root."
    python3 -m pip wheel --no-deps --quiet -w "$wheel_dir" "$repo_root"
    wheels=("$wheel_dir"/prompt_tuning_jax-*.whl)
    PACKAGE=${wheels[0]}
  fi
  if [[ -f "$PACKAGE" ]]; then
    "${GCLOUD_TPU[@]}" scp "$PACKAGE" "$TPU_NAME":~/ "${LOCATION[@]}" --worker=all
    remote_package="\$HOME/$(basename "$PACKAGE")"
  else
    remote_package=$(printf '%q' "$PACKAGE")
  fi
  on_all_workers "python3 -m pip install --upgrade --quiet 'jax[tpu]' ${remote_package}"
fi

# 3. Train on all workers; jax.distributed starts when there are several.
distributed=0
((num_workers > 1)) && distributed=1
# A gin file that exists here (your own) is copied to every worker; other names
# are the package's (e.g. models/t5_1_1_xxl.gin), resolved by ptj there.
ptj_args=()
for gin_file in "${GIN_FILES[@]}"; do
  if [[ -f "$gin_file" ]]; then
    on_all_workers "mkdir -p ptj_gin"
    "${GCLOUD_TPU[@]}" scp "$gin_file" "$TPU_NAME":ptj_gin/ "${LOCATION[@]}" --worker=all
    gin_file="ptj_gin/$(basename "$gin_file")"
  fi
  ptj_args+=("--gin_file=$gin_file")
done
ptj_args+=("--gin.MODEL_DIR='$MODEL_DIR'" "${EXTRA_ARGS[@]}")
# pip installs the `ptj` entry point into ~/.local/bin when site-packages is not writable.
remote_command="export PATH=\$HOME/.local/bin:\$PATH; PTJ_DISTRIBUTED=$distributed ptj train"
remote_command+=" $(printf '%q ' "${ptj_args[@]}")"

mkdir -p logs
log_file="logs/${TPU_NAME}-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "Running on all workers: $remote_command"
echo "Streaming output to this terminal and $log_file."
on_all_workers "$remote_command" 2>&1 | tee "$log_file"
