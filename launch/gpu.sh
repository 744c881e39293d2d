#!/usr/bin/env bash
# Trains a prompt with `ptj train` on all GPUs of this host, or as one node of
# a multi-node run (one process per node; JAX's distributed runtime connects
# them through a coordinator).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/gpu.sh --model_dir DIR --gin_file FILE [--gin_file FILE ...] [options] \
         [-- EXTRA_PTJ_ARGS...]

Required (flag or environment variable):
  --model_dir DIR        checkpoints and logs (local path or gs://)  (MODEL_DIR)
  --gin_file FILE        gin file for ptj train, repeatable      (GIN_FILES, space-separated)

Multi-node (run the same command on every node, changing --node_rank):
  --coordinator HOST:PORT   address of node 0, reachable by all   (JAX_COORDINATOR_ADDRESS)
  --num_nodes N             number of nodes                        (JAX_NUM_PROCESSES)
  --node_rank I             this node, 0 .. N-1                    (JAX_PROCESS_ID)
  Under SLURM (srun --ntasks-per-node=1) these come from SLURM's variables.

Options:
  --gpus LIST            GPUs to use, e.g. 0,1,2,3 (default: all)  (CUDA_VISIBLE_DEVICES)
  --mem_fraction F       share of GPU memory JAX may take (default 0.90, as the
                         dry run assumes)                  (XLA_PYTHON_CLIENT_MEM_FRACTION)
  --dry_run              pass --dry_run to ptj train (plan memory, no training)
  -h, --help             this text

Everything after `--` goes to `ptj train` unchanged.
EOF
}

die() { echo "gpu.sh: $*" >&2; exit 1; }

MODEL_DIR=${MODEL_DIR:-}
read -r -a GIN_FILES <<< "${GIN_FILES:-}"
COORDINATOR=${JAX_COORDINATOR_ADDRESS:-}
NUM_NODES=${JAX_NUM_PROCESSES:-}
NODE_RANK=${JAX_PROCESS_ID:-}
MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
EXTRA_ARGS=()

while (($#)); do
  case "$1" in
    --model_dir) MODEL_DIR=${2:?--model_dir needs a value}; shift 2 ;;
    --gin_file) GIN_FILES+=("${2:?--gin_file needs a value}"); shift 2 ;;
    --coordinator) COORDINATOR=${2:?--coordinator needs a value}; shift 2 ;;
    --num_nodes) NUM_NODES=${2:?--num_nodes needs a value}; shift 2 ;;
    --node_rank) NODE_RANK=${2:?--node_rank needs a value}; shift 2 ;;
    --gpus) export CUDA_VISIBLE_DEVICES=${2:?--gpus needs a value}; shift 2 ;;
    --mem_fraction) MEM_FRACTION=${2:?--mem_fraction needs a value}; shift 2 ;;
    --dry_run) EXTRA_ARGS+=(--dry_run); shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA_ARGS+=("$@"); break ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[[ -n "$MODEL_DIR" ]] || die "--model_dir (or MODEL_DIR) is required; see --help"
((${#GIN_FILES[@]})) || die "at least one --gin_file (or GIN_FILES) is required; see --help"
command -v ptj >/dev/null || die "ptj is not installed: pip install 'jax[cuda12]' and this package first"

# Multi-node: all three or none (SLURM provides its own, detected by JAX).
if [[ -n "$COORDINATOR$NUM_NODES$NODE_RANK" ]]; then
  [[ -n "$COORDINATOR" && -n "$NUM_NODES" && -n "$NODE_RANK" ]] ||
    die "multi-node needs --coordinator, --num_nodes and --node_rank together"
  [[ "$NUM_NODES" =~ ^[0-9]+$ && "$NODE_RANK" =~ ^[0-9]+$ ]] ||
    die "--num_nodes and --node_rank must be integers"
  ((NODE_RANK < NUM_NODES)) || die "--node_rank $NODE_RANK is not below --num_nodes $NUM_NODES"
  export JAX_COORDINATOR_ADDRESS=$COORDINATOR JAX_NUM_PROCESSES=$NUM_NODES JAX_PROCESS_ID=$NODE_RANK
  echo "Node $NODE_RANK of $NUM_NODES, coordinator $COORDINATOR."
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=$MEM_FRACTION

ptj_args=()
for gin_file in "${GIN_FILES[@]}"; do
  ptj_args+=("--gin_file=$gin_file")
done
ptj_args+=("--gin.MODEL_DIR='$MODEL_DIR'" "${EXTRA_ARGS[@]}")

mkdir -p logs
log_file="logs/gpu-node${NODE_RANK:-0}-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "Running: ptj train ${ptj_args[*]}"
echo "Output also goes to $log_file."
ptj train "${ptj_args[@]}" 2>&1 | tee "$log_file"
