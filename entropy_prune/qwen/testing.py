"""Tiny offline Qwen-VL pieces for tests and benchmarks: an in-memory byte-level tokenizer,
processors for both image-processor backends and random-weight Qwen2-VL / Qwen2.5-VL / Qwen3-VL
models built from configs (no downloads). Useful to check a pipeline end to end without weights:

>>> from entropy_prune.qwen import wrap_processor
>>> from entropy_prune.qwen.testing import make_processor, textured_image
>>> out = wrap_processor(make_processor(), alpha=0.5, mode="drop").image_processor([textured_image(112, 112, 0)])
>>> len(out["image_kept_regions"])  # exactly half of the 4 x 4 merge units
8
"""

from __future__ import annotations

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5MoeConfig,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from ._compat import MM_ENCODER_OUTPUTS

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
"""Every supported family; the last four share Qwen3-VL's processor (16 px patches)."""
QWEN3_LIKE = FAMILIES[2:]

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Small pixel budget so test images stay a few merge units wide.
SIZE = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 64}
SIZE_QWEN3 = {"shortest_edge": 64 * 64, "longest_edge": 32 * 32 * 64}


def make_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (256 byte tokens, no merges) + Qwen-VL special tokens, left padding."""
    byte_vocab = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_vocab))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )


def make_processor(backend: str = "torchvision", family: str = "qwen2_vl"):
    """Stock processor of ``family`` with the given image-processor backend ("torchvision" or "pil").

    transformers 5.23 refuses `video_processor=None`, so a (tiny) video processor is always passed.
    Qwen3-VL uses 16 px patches (32 px units) and mean/std 0.5.
    """
    image_cls = {"torchvision": Qwen2VLImageProcessor, "pil": Qwen2VLImageProcessorPil}[backend]
    if family in QWEN3_LIKE:
        half = [0.5, 0.5, 0.5]
        image_processor = image_cls(size=dict(SIZE_QWEN3), patch_size=16, image_mean=half, image_std=half)
        video_processor = Qwen3VLVideoProcessor(
            size=dict(SIZE_QWEN3), do_sample_frames=False, cap_pixels_per_frame=False
        )
    else:
        image_processor = image_cls(size=dict(SIZE))
        video_processor = Qwen2VLVideoProcessor(size=dict(SIZE), cap_pixels_per_frame=False)
    processor_cls = {"qwen2_vl": Qwen2VLProcessor, "qwen2_5_vl": Qwen2_5_VLProcessor}.get(family, Qwen3VLProcessor)
    return processor_cls(
        image_processor=image_processor,
        tokenizer=make_tokenizer(),
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def make_config(tokenizer: PreTrainedTokenizerFast, family: str = "qwen2_vl"):
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(depth=2, num_heads=4, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if family == "qwen2_vl":
        cls = Qwen2VLConfig
        vision.update(embed_dim=32, hidden_size=64, mlp_ratio=2)
    elif family == "qwen2_5_vl":
        cls = Qwen2_5_VLConfig
        vision.update(
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=64,
            window_size=112,
            fullatt_block_indexes=[1],
            tokens_per_second=2,
        )
    else:
        cls = {
            "qwen3_vl": Qwen3VLConfig,
            "qwen3_vl_moe": Qwen3VLMoeConfig,
            "qwen3_5": Qwen3_5Config,
            "qwen3_5_moe": Qwen3_5MoeConfig,
        }[family]
        text.update(head_dim=16)
        vision.update(
            hidden_size=32, intermediate_size=64, out_hidden_size=64, patch_size=16, num_position_embeddings=64
        )
        if family.startswith("qwen3_vl"):
            vision.update(deepstack_visual_indexes=[0])
        if family.endswith("moe"):  # 4 experts, 2 per token
            text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
        if family.startswith("qwen3_5"):  # one gated linear-attention layer, then full attention
            text.update(
                head_dim=64,
                layer_types=["linear_attention", "full_attention"],
                linear_key_head_dim=8,
                linear_value_head_dim=8,
                linear_num_key_heads=2,
                linear_num_value_heads=4,
            )
        if family == "qwen3_5_moe":
            text.update(shared_expert_intermediate_size=32)
    return cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


_MODEL_CLASSES = {
    "qwen2_vl": Qwen2VLForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen3_vl": Qwen3VLForConditionalGeneration,
    "qwen3_vl_moe": Qwen3VLMoeForConditionalGeneration,
    "qwen3_5": Qwen3_5ForConditionalGeneration,
    "qwen3_5_moe": Qwen3_5MoeForConditionalGeneration,
}


def make_model(tokenizer: PreTrainedTokenizerFast, family: str = "qwen2_vl", seed: int = 0):
    """Random-weight tiny model of ``family`` in float32, eval mode, sdpa attention."""
    torch.manual_seed(seed)
    config = make_config(tokenizer, family)
    model = _MODEL_CLASSES[family](config).eval()
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    return model


def textured_image(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 (h, w, 3): smooth gradient background with a noisy rectangle (varied entropy)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255) // max(w - 1, 1), (y * 255) // max(h - 1, 1), np.full_like(x, 128)], -1)
    r0, c0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    img[r0 : r0 + h // 2, c0 : c0 + w // 2] = rng.integers(0, 256, (h // 2, w // 2, 3))
    return img.astype(np.uint8)


def logits(model, inputs):
    """Forward logits without gradients."""
    with torch.no_grad():
        return model(**inputs).logits


def greedy(model, inputs, **kwargs):
    """Three greedy (or beam, with num_beams) new tokens."""
    return model.generate(**inputs, max_new_tokens=3, do_sample=False, **kwargs)


def beams(model, inputs):
    """Three new tokens by 2-beam search; None where transformers < 5.19 refuses beams on pruned
    inputs (after checking that it says which version to upgrade to)."""
    pruned = any(inputs.get(key) is not None for key in ("image_kept_regions", "video_kept_regions"))
    if MM_ENCODER_OUTPUTS or not pruned:
        return greedy(model, inputs, num_beams=2)
    try:
        greedy(model, inputs, num_beams=2)
    except ValueError as err:
        if "needs transformers >= 5.19" in str(err):
            return None
        raise
    raise AssertionError("transformers < 5.19 ran beam search on pruned inputs instead of refusing it")


IMAGE, VIDEO, TEXT = {"type": "image"}, {"type": "video"}, {"type": "text", "text": "Describe."}


def prompts(proc, contents):
    """Chat-templated prompts, one per list of content parts."""
    return [proc.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True) for c in contents]


def family_media(family: str):
    """2 images; a 5-frame video (padded to 3 temporal patches) and a 1-frame one (1 temporal patch).
    The stock Qwen3-VL video processor refuses fewer than 2 frames, so it gets a 2-frame clip."""
    images = [textured_image(112, 168, 0), textured_image(84, 84, 1)]
    odd = np.stack([textured_image(84, 112, s) for s in range(5)])
    short = np.stack([textured_image(56, 84, 9)] * (2 if family in QWEN3_LIKE else 1))
    return images, [odd, short]


def batch(proc, media, **kwargs):
    """Two prompts: [image, odd video, image] and [short video] (2 images + 2 videos, left padded)."""
    images, videos = media
    texts = prompts(proc, [[IMAGE, VIDEO, IMAGE, TEXT], [VIDEO, TEXT]])
    return proc(images=images, videos=videos, text=texts, return_tensors="pt", padding=True, **kwargs)


def save_checkpoint(path: str, family: str = "qwen2_vl", seed: int = 0) -> None:
    """Save a tiny random ``family`` model with its processor to ``path``, loadable by
    ``from_pretrained`` and by vLLM: two 32-wide attention heads, one KV head (vLLM's CPU attention
    needs head_dim >= 32), M-RoPE sections (4, 6, 6), interleaved for Qwen3-like families."""
    processor = make_processor(family=family)
    config = make_config(processor.tokenizer, family)
    text = config.text_config
    text.num_attention_heads, text.num_key_value_heads = 2, 1
    if family in QWEN3_LIKE:  # real Qwen3-VL configs say so; transformers interleaves anyway, vLLM only if told
        text.head_dim = 32
        text.rope_parameters["mrope_interleaved"] = True
    text.rope_parameters["mrope_section"] = [4, 6, 6]
    torch.manual_seed(seed)
    model = _MODEL_CLASSES[family](config).eval()
    model.generation_config.pad_token_id = text.pad_token_id
    model.generation_config.eos_token_id = text.eos_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
