"""The vLLM plugin on tiny random checkpoints, on CPU, in process: keep-all equals stock vLLM,
pruned requests equal the transformers path, and bad settings or impossible requests are refused
with errors naming the setting while the engine keeps serving.

Needs vLLM (``.ci/run`` installs ``vllm-cpu`` in a venv of its own); skipped without it unless
``ENTROPY_PRUNE_REQUIRE_VLLM=1``, which ``.ci/run`` sets.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import warnings

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engines in this process
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
if os.environ.get("ENTROPY_PRUNE_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm", reason="vLLM is not installed (.ci/run runs these tests in a vllm-cpu venv)")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.engine.arg_utils import EngineArgs  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402

from entropy_prune.qwen import REGIONS_KEY, VIDEO_REGIONS_KEY, patch_model, wrap_processor  # noqa: E402
from entropy_prune.qwen.testing import family_media, save_checkpoint, textured_image  # noqa: E402
from entropy_prune.vllm import ARCHITECTURES  # noqa: E402
from entropy_prune.vllm._version import check_version  # noqa: E402

STOCK = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
}
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
PROMPT = f"<|im_start|>user\n{IMAGE}{VIDEO}{IMAGE}Describe.<|im_end|>\n<|im_start|>assistant\n"
GREEDY = SamplingParams(temperature=0, max_tokens=6, logprobs=1)
FPS = 2.0


def engine_kwargs(path: str, family: str, plugin: bool = True, **extra) -> dict:
    kwargs = dict(model=path, max_model_len=1024, limit_mm_per_prompt={"image": 2, "video": 1}, max_num_seqs=4,
                  enforce_eager=True, dtype="float32", **extra)
    if plugin:
        kwargs["hf_overrides"] = {"architectures": [ARCHITECTURES[STOCK[family]]]}
    return kwargs


@pytest.fixture(scope="module", params=list(STOCK))
def family(request):
    return request.param


@pytest.fixture(scope="module")
def checkpoint(family, tmp_path_factory):
    path = str(tmp_path_factory.mktemp(family))
    save_checkpoint(path, family)
    return path


@pytest.fixture(scope="module")
def engine(family, checkpoint):
    llm = LLM(**engine_kwargs(checkpoint, family))
    yield llm
    del llm
    gc.collect()


def media(family):
    """Two images and a 4-frame clip (a still background, a noisy square moving across it) with
    the metadata vLLM's video parser needs."""
    images, _ = family_media(family)
    background = textured_image(168, 224, 5)
    rng = np.random.default_rng(0)
    clip = np.stack([background] * 4)
    for i, frame in enumerate(clip):
        frame[40:90, 30 + 40 * i : 80 + 40 * i] = rng.integers(0, 256, (50, 50, 3))
    meta = {"fps": FPS, "total_num_frames": len(clip), "frames_indices": list(range(len(clip))),
            "duration": len(clip) / FPS, "video_backend": "opencv", "do_sample_frames": False}
    return images, clip, meta


def request(family, settings=None, prompt=PROMPT):
    images, clip, meta = media(family)
    data = {"image": [Image.fromarray(i) for i in images], "video": [(clip, meta)]}
    out = {"prompt": prompt, "multi_modal_data": data}
    if settings is not None:
        out["mm_processor_kwargs"] = settings
    return out


def summary(output):
    """Prompt ids, generated ids and their logprobs of one RequestOutput."""
    gen = output.outputs[0]
    logprobs = [lp[t].logprob for t, lp in zip(gen.token_ids, gen.logprobs, strict=True)]
    return list(output.prompt_token_ids), list(gen.token_ids), logprobs


def transformers_path(checkpoint, family, settings):
    """Prompt ids and 6 greedy tokens of the library's transformers path on the same inputs."""
    images, clip, meta = media(family)
    processor = wrap_processor(AutoProcessor.from_pretrained(checkpoint), **settings)
    model = patch_model(AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval())
    video_kwargs = {"video_metadata": [{k: meta[k] for k in ("fps", "total_num_frames", "frames_indices")}],
                    "do_sample_frames": False}
    inputs = processor(text=[PROMPT], images=images, videos=[clip], return_tensors="pt", **video_kwargs)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    n = inputs["input_ids"].shape[1]
    return inputs["input_ids"][0].tolist(), out[0, n:].tolist(), inputs


# ---------------------------------------------------------------- equal to stock vLLM / transformers


def answer(checkpoint: str, family: str, plugin: bool, settings: dict | None, extra: dict) -> None:
    """Print the summary of one engine's answer to one request (run in a process of its own: a
    process holds one in-process engine)."""
    llm = LLM(**engine_kwargs(checkpoint, family, plugin=plugin, **extra))
    print("SUMMARY", json.dumps(summary(llm.generate(request(family, settings), GREEDY, use_tqdm=False)[0])))


def answer_in_subprocess(checkpoint, family, plugin, settings=None, **extra):
    code = f"import test_vllm; test_vllm.answer({checkpoint!r}, {family!r}, {plugin!r}, {settings!r}, {extra!r})"
    run = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__), capture_output=True, text=True,
                         timeout=600)
    line = [x for x in run.stdout.splitlines() if x.startswith("SUMMARY ")]
    assert line, run.stderr[-3000:]
    return json.loads(line[-1].removeprefix("SUMMARY "))


def test_keep_all_equals_stock_vllm(family, checkpoint):
    # Each engine in a fresh process. The pruning architectures normalise pixels in the processor
    # (the selection scores and averages normalised values); stock vLLM normalises on the device
    # by default, which rounds differently: against stock with the same placement
    # (mm_device_do_normalize=False) everything is bit-identical, against its default the logprobs
    # agree to float32 rounding.
    cpu = answer_in_subprocess(checkpoint, family, False, mm_device_do_normalize=False)
    device = answer_in_subprocess(checkpoint, family, False)
    for settings in ({"patch_selection_method": None}, {"alpha": 1.0}):
        got = answer_in_subprocess(checkpoint, family, True, settings)
        assert got == cpu, settings
        assert got[:2] == device[:2], settings
        np.testing.assert_allclose(got[2], device[2], rtol=1e-6, atol=0, err_msg=str(settings))
SETTINGS = [
    {"alpha": 0.3},
    {"alpha": 0.5, "mode": "drop"},
    {"patch_selection_method": "v1", "thresholds": [7.3, 7.0]},
    {"patch_selection_method": "v2", "alpha": 1.0},
    {"alpha": 0.3, "mode": "drop", "tolerance": 0},
    {"alpha": 0.3, "tolerance": 0, "downscale": True},
    {"alpha": 0.3, "downscale": "least_error"},
    {"alpha": 0.3, "tolerance": 0, "downscale": "balanced"},
    {"alpha": 0.3, "shapes": "halves", "temporal_threshold": 0.05},
    {"patch_selection_method": "v1", "thresholds": [7.3, 7.0], "temporal_threshold": 0.05},
]


def test_pruned_equals_transformers_path_in_one_batch(family, checkpoint, engine):
    outputs = engine.generate([request(family, s) for s in SETTINGS], GREEDY, use_tqdm=False)
    full = len(summary(engine.generate(request(family, {"patch_selection_method": None}), GREEDY,
                                       use_tqdm=False)[0])[0])
    video_tokens = []
    for settings, output in zip(SETTINGS, outputs, strict=True):
        prompt_ids, tokens, _ = summary(output)
        want_ids, want_tokens, inputs = transformers_path(checkpoint, family, settings)
        assert prompt_ids == want_ids, settings  # one placeholder per kept region, per item
        assert tokens == want_tokens, settings
        assert len(prompt_ids) < full, settings
        video_tokens.append(len(inputs[VIDEO_REGIONS_KEY]))
        oblong = any(bool((inputs[k][:, 5] != inputs[k][:, 6]).any()) for k in (REGIONS_KEY, VIDEO_REGIONS_KEY))
        assert oblong == (settings.get("shapes") == "halves"), settings  # squashed tokens went through vLLM
    if family != "qwen3_vl":  # its tiny video processor caps the clip at 3 x 4 units, as coarse as v1 gets
        assert video_tokens[-1] < video_tokens[2]  # the temporal score coarsens what barely changed


def test_settings_are_part_of_the_cache_key(family, engine):
    lengths = [len(engine.generate(request(family, {"alpha": a}), GREEDY, use_tqdm=False)[0].prompt_token_ids)
               for a in (0.5, 0.2, 0.5)]
    assert lengths[0] == lengths[2] > lengths[1]


# ---------------------------------------------------------------- errors name the setting; engine keeps serving


@pytest.mark.parametrize(
    ("settings", "parameter"),
    [
        ({"alpah": 0.3}, "alpah"),
        ({"alpha": 2}, "alpha"),
        ({"alpha": "0.3"}, "alpha"),
        ({"mode": "fast"}, "mode"),
        ({"patch_selection_method": "v3"}, "patch_selection_method"),
        ({"num_scales": 0}, "num_scales"),
        ({"temporal_threshold": -1}, "temporal_threshold"),
        ({"videos_kwargs": {"alpha": 0}}, "alpha"),
    ],
)
def test_bad_request_settings_are_named_and_the_engine_serves_on(family, engine, settings, parameter):
    with pytest.raises(VLLMValidationError) as err:
        engine.generate(request(family, settings), GREEDY, use_tqdm=False)
    assert err.value.parameter == parameter
    assert parameter in str(err.value)
    assert engine.generate(request(family, {"alpha": 0.3}), GREEDY, use_tqdm=False)[0].outputs[0].token_ids


def test_an_image_that_keeps_no_token_is_refused(family, engine):
    tiny = {"prompt": f"<|im_start|>user\n{IMAGE}<|im_end|>\n", "multi_modal_data": {"image": Image.fromarray(
        textured_image(56, 56, 0))}, "mm_processor_kwargs": {"alpha": 0.05, "mode": "drop"}}
    with pytest.raises(VLLMValidationError, match="keeps no token") as err:
        engine.generate(tiny, GREEDY, use_tqdm=False)
    assert err.value.parameter == "alpha"


def test_profiling_inputs_are_not_pruned(family, checkpoint):
    from vllm.multimodal import MULTIMODAL_REGISTRY

    engine_default = {"alpha": 0.2, "tolerance": 0}
    config = EngineArgs(**engine_kwargs(checkpoint, family, mm_processor_kwargs=engine_default)).create_model_config()
    processor = MULTIMODAL_REGISTRY.create_processor(config)
    dummy = processor.get_dummy_mm_inputs({"image": 1})
    image_id = config.hf_config.image_token_id
    assert sum(t == image_id for t in dummy["prompt_token_ids"]) == processor.info.get_max_image_tokens()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"mm_encoder_tp_mode": "data"}, "mm_encoder_tp_mode"),
        ({"video_pruning_rate": 0.5}, "video_pruning_rate"),
        ({"compilation_config": {"cudagraph_mm_encoder": True}}, "cudagraph_mm_encoder"),
        ({"mm_processor_kwargs": {"alpha": 3}}, "alpha"),
        ({"mm_processor_kwargs": {"mdoe": "drop"}}, "mdoe"),
    ],
)
def test_engine_refuses_what_the_plugin_cannot_run(family, checkpoint, extra, match):
    from entropy_prune.vllm.models import check_engine

    config = EngineArgs(**engine_kwargs(checkpoint, family, **extra)).create_engine_config()
    with pytest.raises(ValueError, match=match):
        check_engine(config)


def test_engine_start_with_a_bad_default_raises(checkpoint, family):
    if family != "qwen2_vl":
        pytest.skip("one engine start is enough: the check is the same for every family")
    with pytest.raises(Exception, match="alpha"):
        LLM(**engine_kwargs(checkpoint, family, mm_processor_kwargs={"alpha": 3}))
    gc.collect()


def test_version_guard():
    with pytest.raises(ImportError, match="vLLM >= 0.32"):
        check_version("0.31.2")
    with pytest.warns(UserWarning, match="tested with vLLM 0.32.x"):
        check_version("0.40.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_version("0.32.0+cpu")


def test_compiled_kernels_stay_off_with_vllm_on_cpu():
    """vLLM 0.32's CPU worker fails to start once numba is loaded (see entropy_prune.vllm), so the
    plugin keeps the core's kernels off; the engines above, started after processors ran, rely on it."""
    from entropy_prune import _compiled

    assert _compiled._kernels() is None
