#!/usr/bin/env bash
# One prepared pass over llmbench's CUDA paths, for a session that has a GPU for a few minutes.
# Each step has its own time limit and the script goes on after a failure; every command's
# output and JSON land in ${OUT:-gpu-session}/. Install first (torch for the machine's CUDA,
# then `pip install -e '.[dev,triton]'`).
#
#     OUT=gpu-out bash benchmarks/gpu_session.sh
set -u
OUT=${OUT:-gpu-session}
mkdir -p "$OUT"
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name: $*"
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  echo "exit $? ($name)" | tee -a "$OUT/$name.txt"
  tail -n 30 "$OUT/$name.txt"
}
step env 60 llmbench env --json "$OUT/env.json"
step attention 240 llmbench attention --seq 8192 --json "$OUT/attention.json" -q
step triton 240 python benchmarks/gpu_attention_check.py
step comm 180 llmbench comm --sizes 1KiB:1GiB --json "$OUT/comm.json" -q
step ddp 180 llmbench ddp --model base --json "$OUT/ddp.json" -q
step amp 180 llmbench amp --model mini --steps 30 --json "$OUT/amp.json" -q
