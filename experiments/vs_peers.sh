#!/usr/bin/env bash
# toolkit against the servers a user would pick instead on this CPU (issue 18), all up at
# once, one `toolkit bench -m bench.target=...` per level so that the servers take turns:
#   port 8081  llama.cpp's llama-server, -np 64 slots, the embedded Q4_1 GGUF (../shared/peers)
#   port 8082  vLLM's CPU backend, bf16 (../shared/peers/vllm_cpu.sh)
#   port 8000  toolkit serve (the defaults: bf16)
#   port 8002  toolkit serve quant=q4_1 (the file's 4-bit blocks, as llama.cpp reads them)
#   port 8003  toolkit serve recipe=cpu-throughput (the best recipe: quant=w8a8 with an int8
#              LM head, 128 streams, 4096-token steps)
# Workload: ~200-token prompts, 128 tokens out, ignore_eos, greedy, streamed; 8 requests at
# one stream, twice the concurrency otherwise. Every round and level sends other prompts
# (bench.seed), so no server answers from a prompt cache.
#   bash experiments/vs_peers.sh OUT_DIR [OVERRIDE...]      (OVERRIDEs go to every toolkit)
#   PEERS=/work/shared/peers LEVELS="1 16 64" ROUNDS=2 SERVERS="8081 8082 8000 8002 8003"
# Then: python experiments/plot_vs_peers.py OUT_DIR (the figure and the table, best round).
set -euo pipefail
out=${1:-experiments/results/vs-peers}
shift || true
peers=${PEERS:-$(cd "$(dirname "$0")/../../shared/peers" 2>/dev/null && pwd || echo /work/shared/peers)}
servers=${SERVERS:-8081 8082 8000 8002 8003}
mkdir -p "$out"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
start() {  # start PORT COMMAND...: in the background, logging to OUT/PORT.log
  local port=$1; shift
  [[ " $servers " == *" $port "* ]] || return 0
  "$@" > "$out/$port.log" 2>&1 &
  pids+=($!)
}
start 8081 bash "$peers/llama_server.sh" 8081
start 8082 bash "$peers/vllm_cpu.sh" serve 8082
start 8000 toolkit serve server.port=8000 "$@"
start 8002 toolkit serve server.port=8002 quant=q4_1 "$@"
start 8003 toolkit serve server.port=8003 recipe=cpu-throughput "$@"
targets=()
for port in $servers; do
  until curl -sf "http://127.0.0.1:$port/v1/models" > /dev/null; do sleep 2; done
  targets+=("http://127.0.0.1:$port/v1")
done
common=(bench.model=smollm2 bench.prompt_len=200 bench.output_len=128 bench.ignore_eos=true
        bench.temperature=0 bench.num_warmup=1 bench.progress=false)
for round in $(seq 0 $(( ${ROUNDS:-2} - 1 ))); do
  for concurrency in ${LEVELS:-1 16 64}; do
    num_requests=$(( concurrency == 1 ? 8 : 2 * concurrency ))
    toolkit bench -m "bench.target=$(IFS=,; echo "${targets[*]}")" \
      "bench.max_concurrency=$concurrency" "bench.num_requests=$num_requests" \
      "bench.seed=$(( 1000 * round + concurrency ))" "${common[@]}" \
      "hydra.sweep.dir=$out/c$concurrency-r$round"
  done
done
python experiments/plot_vs_peers.py "$out"
