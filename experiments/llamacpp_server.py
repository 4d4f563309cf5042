"""Start llama-cpp-python's OpenAI server with llama.cpp's extra buffer types off.

The peer in the CPU comparison (issue 8). On this CPU (AMX) llama.cpp's weight-repacking
buffer types crash with an invalid opcode on the first request; the server exposes no
switch for them, so this launcher turns ``use_extra_bufts`` off in the model defaults and
then runs the stock server. Run it in its own venv:

    python3 -m venv /work/llamacpp-venv
    /work/llamacpp-venv/bin/pip install 'llama-cpp-python[server]'    # ~13 min build
    /work/llamacpp-venv/bin/python experiments/llamacpp_server.py --model SmolLM2.gguf \
        --n_threads 2 --n_ctx 8192 --port 8081 --model_alias smollm2
"""

import sys

import llama_cpp
import llama_cpp.llama

_default_params = llama_cpp.llama_model_default_params


def _params_without_extra_bufts():
    params = _default_params()
    params.use_extra_bufts = False
    return params


llama_cpp.llama_model_default_params = _params_without_extra_bufts
llama_cpp.llama.llama_cpp.llama_model_default_params = _params_without_extra_bufts

if __name__ == "__main__":
    from llama_cpp.server.__main__ import main

    sys.argv[0] = "llama_cpp.server"
    main()
