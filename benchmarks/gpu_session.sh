#!/usr/bin/env bash
# One prepared pass over llmbench's CUDA paths, for a session that has a GPU for a few minutes.
#
#     bash benchmarks/gpu_session.sh RESULTS_DIR
#
# Each step has its own time limit (all of them together: 595 s, under the device's 10 minutes a command) and the script goes on
# after a failure; every step's output and JSON land in RESULTS_DIR, with summary.txt (also
# printed at the end) and session.tar.gz holding everything. It must finish on any NVIDIA GPU
# llmbench knows (A100, H100/H200, L4, RTX 4090, A4000, T4, V100, B200, RTX 5090, H20): steps
# that a GPU cannot do record "unavailable" cases rather than failing.
#
# Without a CUDA GPU it is a rehearsal: the same steps at tiny shapes on the CPU (Triton through
# its interpreter), to check the script itself before GPU minutes are spent on it.
#
# Install first: torch for the machine's CUDA, then `pip install -e '.[triton]'` (or, where
# the dependencies are present already, `pip install --no-deps -e .`). A `.whl/` folder of
# wheels at the repository root (pydantic and what it needs) is installed to /tmp/site first.
set -u
DIR=${1:?usage: bash benchmarks/gpu_session.sh RESULTS_DIR}
mkdir -p "$DIR"
cd "$(dirname "$0")/.." || exit 2
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! python3 -c "import llmbench.cli.app" 2>/dev/null; then
  python3 -m pip install -q --no-deps -e . || { echo "cannot install llmbench"; exit 2; }
fi
export PYTHONUNBUFFERED=1
LLMBENCH="python3 -m llmbench"

if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  GPU=1
  ARCH=$(python3 -c "import torch; print('sm%d%d' % torch.cuda.get_device_capability(0))")
  SEQ=8192; SEQ_BWD=4096; KV=8192; TUNE_SEQ=4096
  BWD_SHAPE="--heads 16 --kv-heads 4 --head-dim 128"
  DECODE_SHAPE="--batch 8 --heads 32 --kv-heads 8 --head-dim 128"
  COMM_SIZES=1KiB:256MiB
  KV_DTYPE=bf16; KV_IMPL=triton
  AMP="--model mini --steps 20"
  FLEX_RUN=""
else
  GPU=0; ARCH=sm80
  export TRITON_INTERPRET=1
  SEQ=256; SEQ_BWD=128; KV=256; TUNE_SEQ=64
  BWD_SHAPE="--heads 4 --kv-heads 2 --head-dim 32"
  DECODE_SHAPE="--batch 2 --heads 4 --kv-heads 2 --head-dim 32"
  COMM_SIZES=1KiB:1MiB
  KV_DTYPE=fp32; KV_IMPL=tiled  # the interpreter would outlast the step's limit
  AMP="--model tiny --steps 8"  # mini, 20 steps: ~45 s on 2 cores
  FLEX_RUN="--no-isolate"  # one process: Inductor's start-up (~20 s on 2 cores) paid once
  echo "no CUDA GPU: rehearsal at tiny shapes on the CPU"
fi
if [ $GPU = 1 ]; then
  DEV=cuda; BACKEND=nccl; NRANKS=$(python3 -c "import torch; print(torch.cuda.device_count())")
else
  DEV=cpu; BACKEND=gloo; NRANKS=2
fi
echo "mode=$([ $GPU = 1 ] && echo gpu || echo rehearsal) arch=$ARCH ranks=$NRANKS" \
  >"$DIR/session.txt"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2 t0=$SECONDS code
  shift 2
  echo "=== $name ($limit s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$DIR/$name.txt" 2>&1
  code=$?
  tail -n 25 "$DIR/$name.txt"
  echo "exit $code after $((SECONDS - t0)) s: $name" | tee -a "$DIR/$name.txt" "$DIR/session.txt"
}

step env 20 $LLMBENCH env --head-dim 128 --json "$DIR/env.json"
# What this GPU really does (GEMM per dtype, copy/triad, host<->device), saved as its
# calibration: the attention and training steps below place their cases on these ceilings.
step peak 40 $LLMBENCH peak --save --json "$DIR/peak.json" -q
# What Triton compiles for this GPU's family, no launch: shared memory and registers per tile.
step compile 45 $LLMBENCH tune attention --compile-only --arch "$ARCH" --json "$DIR/compile.json" -q
# The headline: every implementation at seq 8192, forward, the GPU's default dtype.
step attention 60 $LLMBENCH attention --seq "$SEQ" --json "$DIR/attention.json" -q
# With a trace of each case (CUDA kernels by self time) and, on a GPU, the allocator's snapshot.
SNAPSHOT=$([ $GPU = 1 ] && echo "--memory-snapshot $DIR/snapshots")
# shellcheck disable=SC2086 # the shapes are lists of flags
step attention-bwd 75 $LLMBENCH attention --seq "$SEQ_BWD" --mode fwd+bwd $BWD_SHAPE \
  --trace "$DIR/traces" $SNAPSHOT --json "$DIR/attention-bwd.json" -q
# The compiled peers (opt-in rows): FlexAttention and the textbook attention under
# torch.compile, each compiled from cold caches (compile time apart from the steady time).
# shellcheck disable=SC2086
step flex 40 $LLMBENCH attention --seq "$SEQ_BWD" --impl flex,compiled $FLEX_RUN \
  --json "$DIR/flex.json" -q
# Decode-shaped attention: one query against a long key/value cache.
# shellcheck disable=SC2086
step decode 30 $LLMBENCH attention --seq 1 --kv-seq "$KV" $DECODE_SHAPE \
  --impl standard,sdpa,sdpa-flash,sdpa-efficient,flash-attn,tiled,triton \
  --json "$DIR/decode.json" -q
if [ $GPU = 1 ]; then
  step triton-check 55 python3 benchmarks/gpu_attention_check.py
  step tune 40 $LLMBENCH tune attention --head-dims 128 --seq "$TUNE_SEQ" --block-m 64,128 \
    --block-n 32,64,128 --warps 4,8 --stages 2,3 --json "$DIR/tune.json" -q
else
  step tune 60 $LLMBENCH tune attention --interpret --json "$DIR/tune.json" -q
fi
step kvcache 30 $LLMBENCH kvcache --model llama-3-8b --measure-seq "$KV" --measure-layers 4 \
  --impl "$KV_IMPL" --dtype "$KV_DTYPE" --json "$DIR/kvcache.json" -q
# The process-group paths, on every GPU present (one is enough to run each code path): NCCL
# bound to each rank's GPU at set-up, windowed timing, the result check on the device.
step comm 35 $LLMBENCH comm --sizes "$COMM_SIZES" --device "$DEV" --backend "$BACKEND" \
  --json "$DIR/comm.json" -q
step ddp 40 $LLMBENCH ddp --model mini --device "$DEV" --backend "$BACKEND" \
  --json "$DIR/ddp.json" -q
# The same under a launch of the user's own: llmbench is each rank (device choice, watchdog).
TORCHRUN="python3 -m torch.distributed.run --standalone --nproc-per-node $NRANKS -m llmbench"
step comm-torchrun 30 $TORCHRUN comm --collectives all_reduce,all_gather --sizes 1KiB:16MiB \
  --device "$DEV" --backend "$BACKEND" --json "$DIR/comm-torchrun.json" -q
# A rank made to hang: the watchdog must name it before the group's own time-out (2 x 5 + 30 s;
# on NCCL, torch's watchdog would abort the ranks with SIGABRT instead). Exit 0 = as expected.
step hang-report 25 bash -c "LLMBENCH_DIST_FAULT=hang:0:1 $TORCHRUN comm --collectives \
  all_reduce --sizes 1KiB,2KiB --device $DEV --backend $BACKEND --timeout 5 -q 2>&1 \
  | tee /dev/stderr | grep -q 'llmbench: error: rank 0 hung: no progress for 5 s in case'"
# shellcheck disable=SC2086
step amp 30 $LLMBENCH amp $AMP --json "$DIR/amp.json" -q

python3 benchmarks/session_summary.py "$DIR" | tee "$DIR/summary.txt"
tar -czf "$DIR/session.tar.gz" -C "$DIR" --exclude session.tar.gz . 2>/dev/null
echo "everything: $DIR/session.tar.gz"
