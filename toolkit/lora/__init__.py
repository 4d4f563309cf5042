"""Multi-LoRA serving: PEFT adapters read and validated against the model, held in adapter
slots beside the model's QuantLinear projections, and applied per row of a batch.

    modules.py      lora.modules (mapping or name=path list) -> {name: path}
    targets.py      which projection (and fused part) each PEFT module name is, per model
    peft_format.py  adapter_config.json + adapter_model.safetensors -> LoraAdapter
    layer.py        LoraProjection: one QuantLinear's slot buffers and its per-row delta
    batch.py        LoraBatch: the step's per-token slot indices, shared by every projection
    manager.py      LoraManager: served names, the LRU of loaded adapters, slot assignment
"""
