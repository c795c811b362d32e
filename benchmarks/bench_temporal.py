"""Tokens the temporal score saves on video: the same clip with and without ``temporal_threshold``.

    python -m benchmarks.bench_temporal [--tau 0.02]

Clips are 16 frames of 224 x 224 px cut from skimage.data photographs (static, panning, or
half of each), processed by the Qwen2-VL video processor (64 tokens per temporal patch of two
frames) wrapped with entropy_prune. Prints the tokens kept per method, without and with the
temporal score, and per temporal patch.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from skimage import data

from entropy_prune.qwen import VIDEO_REGIONS_KEY, wrap_processor
from entropy_prune.qwen.testing import make_processor

SIZE = {"shortest_edge": 56 * 56, "longest_edge": 224 * 224}
CONFIGS = [("v1 multiscale", dict(patch_selection_method="v1")),
           ("v1 drop", dict(patch_selection_method="v1", mode="drop")),
           ("v2 multiscale", dict(patch_selection_method="v2", alpha=1.0))]


def clip(photo: np.ndarray, static: int, moving: int, step: int, y: int, x: int, side: int = 224) -> np.ndarray:
    """uint8 (static + moving, side, side, 3): a still crop, then a crop panning ``step`` px/frame right."""
    frames = [photo[y:y + side, x:x + side]] * static
    frames += [photo[y:y + side, x + step * (i + 1):x + step * (i + 1) + side] for i in range(moving)]
    return np.stack(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tau", type=float, default=0.02, help="temporal_threshold (luma change, [0, 1] units)")
    args = parser.parse_args()
    video_processor = make_processor().video_processor
    clips = {
        "astronaut: 8 static + 8 panning 16 px/frame": clip(data.astronaut(), 8, 8, 16, 100, 100),
        "coffee: 16 frames panning 4 px/frame": clip(data.coffee(), 0, 16, 4, 80, 60),
        "chelsea: 16 static frames": clip(data.chelsea(), 16, 0, 0, 40, 100),
    }
    for name, frames in clips.items():
        full = video_processor([frames], size=SIZE, return_tensors="pt")
        print(f"{name}: {len(frames)} frames, {int(full['video_grid_thw'].prod()) // 4} tokens unpruned")
        for label, config in CONFIGS:
            counts = []
            for tau in (None, args.tau):
                wrapped = wrap_processor(video_processor, temporal_threshold=tau, **config)
                out = wrapped([frames], size=SIZE, return_tensors="pt")
                groups = int(out["video_grid_thw"][0, 0])
                counts.append(torch.bincount(out[VIDEO_REGIONS_KEY][:, 2], minlength=groups).tolist())
            before, after = (sum(c) for c in counts)
            print(f"  {label:<14} {before:>4} -> {after:>4} tokens ({(before - after) / before:.0%} fewer)"
                  f"   per temporal patch {counts[0]} -> {counts[1]}")


if __name__ == "__main__":
    main()
