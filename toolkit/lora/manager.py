"""LoraManager: which adapters are served, which are loaded, which sit in the slots.

Three levels, as in vLLM and S-LoRA:
- served: adapter name -> directory (lora.modules, and POST /v1/load_lora_adapter), each
  validated when it is added. Each load of a name gets its own key (``name``, then
  ``name#2`` ...): requests carry the key, so the prefix cache never mixes two loads.
- loaded: the adapters read into memory, at most ``max_cpu_loras``, least recently used
  dropped first (and read again from disk when asked for).
- slots: ``max_loras`` adapters copied into every projection's slot buffers; a step uses
  at most that many distinct adapters (the scheduler sees to it), and a step's adapters
  take the least recently used slots of the adapters it does not use.

An adapter unloaded while requests use it stays until the last of them is released.
Thread safety: the API thread adds, removes and resolves names; the engine thread
activates and releases; one lock guards the shared maps.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toolkit.layers.linear import batch_variance, pack_weight
from toolkit.lora.batch import LoraBatch
from toolkit.lora.errors import LoraLoadError, LoraNotFoundError
from toolkit.lora.layer import LoraProjection
from toolkit.lora.modules import check_adapter_name
from toolkit.lora.peft_format import LoraAdapter, read_adapter
from toolkit.lora.targets import LoraTarget, find_targets

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedAdapter:
    """A name requests may use, the key of its current load and its directory."""

    name: str
    key: str
    path: str


def adapter_name(key: str) -> str:
    """The served name of an adapter key (``sql#2`` -> ``sql``)."""
    return key.partition("#")[0]


class LoraManager:
    """The served adapters of one model and its slots; built by build_runtime."""

    def __init__(self, model: nn.Module, max_loras: int, max_lora_rank: int,
                 max_cpu_loras: int, dtype: torch.dtype, device: torch.device | str) -> None:
        if max_loras < 1 or max_lora_rank < 1 or max_cpu_loras < 1:
            raise ValueError("lora.max_loras, lora.max_lora_rank and lora.max_cpu_loras must "
                             "be >= 1")
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.max_cpu_loras = max_cpu_loras
        self.dtype = dtype
        self.device = device
        self.targets: dict[str, list[LoraTarget]] = find_targets(model)
        self.batch = LoraBatch()
        self.projections: dict[int, LoraProjection] = {}
        for layer_targets in self.targets.values():
            for target in layer_targets:
                if id(target.projection) not in self.projections:
                    projection = LoraProjection(target.projection, self.batch, max_loras,
                                                max_lora_rank, dtype)
                    target.projection.lora = projection
                    self.projections[id(target.projection)] = projection
        self._lock = threading.Lock()
        self._served: dict[str, ServedAdapter] = {}
        self._paths: dict[str, str] = {}
        """key -> directory, for served keys and unloaded ones still in use."""
        self._num_loads: Counter[str] = Counter()
        self._loaded: OrderedDict[str, LoraAdapter] = OrderedDict()
        self._slot_keys: list[str | None] = [None] * max_loras
        self._slot_order: list[int] = list(range(max_loras))
        """Slots, least recently used first."""
        self._pins: dict[str, str] = {}
        """request id -> key of each request seen in a step and not yet released."""
        self.num_requests: Counter[str] = Counter()
        """Requests admitted per adapter name (the /metrics per-adapter counts)."""

    # -- the API thread ------------------------------------------------------------------

    def add(self, name: str, path: str) -> ServedAdapter:
        """Validate the adapter in ``path`` and serve it as ``name``; LoraLoadError when
        it cannot be served or the name is taken."""
        check_adapter_name(name)
        with self._lock:
            if name in self._served:
                raise LoraLoadError(f"LoRA adapter {name!r} is already loaded")
        adapter = read_adapter(name, path, self.targets, self.max_lora_rank, self.dtype)
        with self._lock:
            if name in self._served:
                raise LoraLoadError(f"LoRA adapter {name!r} is already loaded")
            self._num_loads[name] += 1
            count = self._num_loads[name]
            key = name if count == 1 else f"{name}#{count}"
            served = ServedAdapter(name, key, adapter.path)
            self._served[name] = served
            self._paths[key] = adapter.path
            self._remember(key, adapter)
        logger.info("serving LoRA adapter %r (rank %d, %s) from %s", name, adapter.rank,
                    ", ".join(adapter.target_modules), adapter.path)
        return served

    def remove(self, name: str) -> None:
        """Stop serving ``name`` (LoraNotFoundError if it is not served); requests that
        use it finish with it."""
        with self._lock:
            served = self._served.pop(name, None)
            if served is None:
                raise LoraNotFoundError(f"LoRA adapter {name!r} is not loaded")
            if served.key not in self._pins.values():
                self._forget(served.key)
        logger.info("stopped serving LoRA adapter %r", name)

    def resolve(self, name: str) -> str | None:
        """The key of served adapter ``name``, or None when it is not one."""
        with self._lock:
            served = self._served.get(name)
            return served.key if served is not None else None

    def served(self) -> list[ServedAdapter]:
        with self._lock:
            return list(self._served.values())

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.num_requests)

    # -- the engine thread ---------------------------------------------------------------

    def activate(self, requests: Sequence[tuple[str, str | None]]) -> dict[str | None, int]:
        """Put the adapters of one step's (request id, key) pairs into slots -> key: slot
        (None: -1). Raises LoraNotFoundError for a key no longer served or in use."""
        keys = list(dict.fromkeys(key for _, key in requests if key is not None))
        if len(keys) > self.max_loras:
            raise RuntimeError(f"{len(keys)} adapters in one step, lora.max_loras="
                               f"{self.max_loras}")
        with self._lock:
            for request_id, key in requests:
                if key is not None and request_id not in self._pins:
                    if key not in self._paths:
                        raise LoraNotFoundError(f"LoRA adapter {adapter_name(key)!r} is not "
                                                "loaded")
                    self._pins[request_id] = key
                    self.num_requests[adapter_name(key)] += 1
            slot_of: dict[str | None, int] = {None: -1}
            for key in keys:
                slot_of[key] = self._slot_for(key, keys)
        return slot_of

    def release(self, request_id: str) -> None:
        """A request finished: drop its pin, and an unloaded adapter it was the last user
        of."""
        with self._lock:
            key = self._pins.pop(request_id, None)
            if (key is not None and self._served.get(adapter_name(key), None) is None
                    and key not in self._pins.values()):
                self._forget(key)

    def batch_variance(self) -> str | None:
        """Where this CPU's batch-invariant matmul gives a row of a LoRA shrink or expand
        other bits among other rows (layers.linear.batch_variance on random weights of
        each shape of the CPU route's wide matmuls, at the model's settled call size), or None."""
        generator = torch.Generator().manual_seed(0)
        shapes = {(tuple(w.shape), w.dtype, p.method.invariant_min_rows)
                  for p in self.projections.values()
                  for w in (p.a.reshape(-1, p.a.shape[2]), p.b[0].repeat(1, p.a.shape[0]))}
        for shape, dtype, min_rows in sorted(shapes, key=str):
            weight = torch.randn(shape, generator=generator).to(dtype)
            packed = pack_weight(weight, batch_invariant=True)
            variance = ("no packed weight" if packed is None else
                        batch_variance(weight, packed, min_rows))
            if variance is not None:
                return variance
        return None

    @property
    def num_pinned(self) -> int:
        return len(self._pins)

    def _slot_for(self, key: str, step_keys: list[str]) -> int:
        """``key``'s slot, writing it into the least recently used slot no adapter of
        this step holds when it is in none."""
        if key in self._slot_keys:
            slot = self._slot_keys.index(key)
        else:
            slot = next(s for s in self._slot_order if self._slot_keys[s] not in step_keys)
            self._write_slot(slot, key, self._adapter(key))
        self._slot_order.remove(slot)
        self._slot_order.append(slot)
        return slot

    def _adapter(self, key: str) -> LoraAdapter:
        adapter = self._loaded.get(key)
        if adapter is not None:
            self._loaded.move_to_end(key)
            return adapter
        adapter = read_adapter(adapter_name(key), self._paths[key], self.targets,
                               self.max_lora_rank, self.dtype)
        self._remember(key, adapter)
        return adapter

    def _remember(self, key: str, adapter: LoraAdapter) -> None:
        self._loaded[key] = adapter
        self._loaded.move_to_end(key)
        while len(self._loaded) > self.max_cpu_loras:
            self._loaded.popitem(last=False)

    def _write_slot(self, slot: int, key: str, adapter: LoraAdapter) -> None:
        for projection in self.projections.values():
            projection.clear_slot(slot)
        for weights in adapter.weights:
            target = self.targets[weights.name][weights.layer]
            self.projections[id(target.projection)].write(
                slot, target, weights.a.to(self.device), weights.b.to(self.device))
        for projection in self.projections.values():
            projection.pack(slot)
        self._slot_keys[slot] = key

    def _forget(self, key: str) -> None:
        """Drop an unloaded adapter that no request uses (its slot is cleared)."""
        self._paths.pop(key, None)
        self._loaded.pop(key, None)
        if key in self._slot_keys:
            slot = self._slot_keys.index(key)
            self._slot_keys[slot] = None
            for projection in self.projections.values():
                projection.clear_slot(slot)


def build_lora_manager(model: nn.Module, modules: dict[str, str], max_loras: int,
                       max_lora_rank: int, max_cpu_loras: int | None, dtype: torch.dtype,
                       device: torch.device | str) -> LoraManager:
    """A manager over ``model`` serving ``modules`` (name -> directory) from the start."""
    manager = LoraManager(model, max_loras, max_lora_rank, max_cpu_loras or max_loras, dtype,
                          device)
    for name, path in modules.items():
        if not Path(path).expanduser().is_dir():
            raise LoraLoadError(f"lora.modules: {name}={path} is not a directory")
        manager.add(name, path)
    return manager
