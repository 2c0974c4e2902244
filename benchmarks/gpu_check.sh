#!/usr/bin/env bash
# Everything a session with a lent GPU checks and times, in one command (about 10 minutes).
#
#   bash benchmarks/gpu_check.sh          # on the GPU machine, from the repository root
#   QUICK=1 bash benchmarks/gpu_check.sh  # a few steps of each, to try the script on a CPU
#   ONLY="throughput vmap-sweep" bash benchmarks/gpu_check.sh  # some steps (a call is <= 10 min)
#
# Logs (at most 8 files: what the device tool brings back) go to $OUT or ./gpu-check. The device image runs
# Python with JAX (CUDA), flax, optax, orbax, PyTorch, but no ml-collections: carry its wheel,
# made here with `pip download ml-collections --no-deps -d wheels` (wheels/ is git-ignored,
# name it in the device tool's `carry`). CIFAR-10 (168 MB) does not fit one 64 MiB transfer: the
# CIFAR step runs only when $HASHING_DATA_DIR/cifar10 exists on the machine (e.g. carried in
# parts over consecutive calls while the machine stays warm).
# On an H200 (2026-11-28, benchmarks/RESULTS.md): throughput 125 s, throughput-bf16 58 s,
# triplet-apply 43 s, vmap-sweep 61 s, compare-cifar10 220 s (the other CIFAR steps: not yet run).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
py=${PYTHON:-python3}
$py -c "import ml_collections" 2>/dev/null || $py -m pip install -q --no-index --no-deps wheels/*.whl
quick=${QUICK:-}
steps=${quick:+3}
steps=${steps:-100}  # a GPU step takes about a millisecond: time enough of them
rounds=${quick:+1}
rounds=${rounds:-3}
nin=${quick:+nin-narrow}  # the full NIN on the GPU, the narrow one in a quick CPU try
nin=${nin:-nin}

wanted() {  # wanted <name>: the step is in $ONLY, or $ONLY is unset
  [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]
}

step() {  # step <name> <command...>: run, keep its log, go on after a failure
  local name=$1
  shift
  wanted "$name" || return
  echo "== $name: $*"
  local start=$SECONDS
  timeout "${STEP_TIMEOUT:-900}" "$@" >"$out/$name.log" 2>&1
  echo "   exit $? after $((SECONDS - start)) s; last lines:"
  tail -n 4 "$out/$name.log"
}

(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true) \
  | tee "$out/device.txt"
$py -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$out/device.txt"

# The accelerator code paths (lax.scan chunks on device data, bf16, data parallel, triplets).
step tests $py -m pytest -q -x -p no:cacheprovider tests/test_train.py tests/test_objectives.py \
  tests/test_models.py
# Issue 7: images/s of JAX vs PyTorch eager and torch.compile, FLOP/s against the matmul peak.
step throughput $py benchmarks/train_throughput.py --steps $steps --rounds $rounds
# bf16 (tensor cores): the small and the large network, PyTorch eager only (compiling is slow).
step throughput-bf16 $py benchmarks/train_throughput.py --dtype bfloat16 --steps $steps \
  --rounds $rounds --cases dsh-pairwise,nin-triplet --no-torch-compile
# Issue 3: explicit triplets through vmap vs a concatenated batch vs three applies.
step triplet-apply $py benchmarks/triplet_apply.py --backbones dsh,$nin \
  --steps $((steps > 5 ? steps / 5 : steps)) --rounds $rounds
# Issue 6: 8 runs in one vmapped step vs one after another.
step vmap-sweep $py benchmarks/vmap_sweep.py ${quick:+--steps 5}
# CIFAR-10 trainings (need $HASHING_DATA_DIR/cifar10 on the machine). Each brings back its
# workdir's results, codes and curves (no parameters, no image grids) as <name>.tgz;
# `launch.py ... --report` rebuilds the tables and plots from it.
data_dir=${HASHING_DATA_DIR:-.}
cifar_step() {  # cifar_step <name> <config spec> [launch flags...]
  local name=$1 spec=$2
  shift 2
  wanted "$name" || return
  if [ ! -d "$data_dir/cifar10" ]; then
    echo "== $name skipped: no $data_dir/cifar10 (set HASHING_DATA_DIR)"
    return
  fi
  step "$name" $py launch.py --config="configs/$spec${quick:+,smoke}" --workdir="runs/gpu-$name" "$@"
  tar -czf "$out/$name.tgz" --exclude=checkpoints --exclude=params.msgpack \
    --exclude="queries_*.png" -C runs "gpu-$name"
}
# Issue 7: the 4-method x 4-bit comparison with the DSH net, compilation included; one process
# per method share the GPU (overlapping compilation, evaluation and host work). H200: 220 s.
cifar_step compare-cifar10 compare.py:data=cifar10-dnnh,seeds=1,methods=dsh/dnnh/cnnh/cnnh+ \
  --processes="${COMPARE_PROCESSES:-4}"
# Issue 2: DSH on the DSH paper's protocol (50,000 training images, 60 epochs), four lengths.
cifar_step dsh-cifar10-dsh dsh.py:data=cifar10-dsh,bits=12/24/36/48
# Issue 3: DNNH with the paper's full NIN, in-batch semi-hard triplets, four lengths.
cifar_step dnnh-nin-cifar10 dnnh.py:data=cifar10-dnnh,backbone=nin,sampling=semihard
# Issue 3: the CPU's best 48-bit recipe (class-label output, learning rate 2e-3, no decay on the
# head) on the full NIN, one step per seed in $SEEDS (SEEDS="0 1 2" ONLY="dnnh-nin-class-s0 ...").
for seed in ${SEEDS:-0}; do
  cifar_step "dnnh-nin-class-s$seed" dnnh.py:data=cifar10-dnnh,bits=48,backbone=nin,sampling=semihard \
    --config.loss.class_weight=1 --config.train.learning_rate=2e-3 \
    --config.train.weight_decay_exclude=head --config.seed="$seed"
done
# Issue 3: divide-and-encode vs fully-connected encode, full NIN, explicit triplets, four lengths.
cifar_step ablate-head-cifar10 ablations.py:study=head,data=cifar10-dnnh,bits=12/24/32/48,seeds=1,backbone=nin \
  --processes=4
# Issue 3: wall time of explicit vs in-batch triplets to the paper's 48-bit mAP (full NIN, one
# run at a time so that each has the card to itself; summary.md gives the times and ratios).
cifar_step triplets-time-cifar10 ablations.py:study=triplets,data=cifar10-dnnh,bits=48,seeds=1,backbone=nin \
  --config.eval.every=975
# Issue 6: the larger VGG-11 backbone at 48 bits (DSH and CNNH+).
cifar_step vgg-cifar10 compare.py:data=cifar10-dnnh,seeds=1,methods=dsh/cnnh+,bits=48,backbone=vgg11 \
  --processes=2
