"""Tiny offline Qwen2-VL pieces for tests: an in-memory byte-level tokenizer, processors for both
image-processor backends and a random-weight model built from a config (no downloads)."""

from __future__ import annotations

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

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


def make_processor(backend: str = "torchvision") -> Qwen2VLProcessor:
    """Stock Qwen2VLProcessor with the given image-processor backend ("torchvision" or "pil").

    transformers 5.23 refuses `video_processor=None`, so a (tiny) video processor is always passed.
    """
    cls = {"torchvision": Qwen2VLImageProcessor, "pil": Qwen2VLImageProcessorPil}[backend]
    image_processor = cls(size=dict(SIZE))
    video_processor = Qwen2VLVideoProcessor(size=dict(SIZE), cap_pixels_per_frame=False)
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=make_tokenizer(),
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def make_config(tokenizer: PreTrainedTokenizerFast) -> Qwen2VLConfig:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return Qwen2VLConfig(
        text_config=dict(
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
        ),
        vision_config=dict(
            depth=2,
            embed_dim=32,
            hidden_size=64,
            num_heads=4,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def make_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> Qwen2VLForConditionalGeneration:
    """Random-weight tiny Qwen2-VL in float32, eval mode, sdpa attention."""
    torch.manual_seed(seed)
    config = make_config(tokenizer)
    model = Qwen2VLForConditionalGeneration(config).eval()
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
