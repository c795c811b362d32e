import subprocess
import sys

import numpy as np
from PIL import Image

from entropy_prune import entropy_maps, select_patches
from entropy_prune.__main__ import default_image, main
from entropy_prune.visualize import render_selection


def test_main_job_prints_table_and_writes_png(tmp_path, capsys):
    out = tmp_path / "sel.png"
    assert main(["--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "budget      0.3   detail      76    256  29.7%" in text
    png = np.asarray(Image.open(out))
    assert png.shape == (448, 2 * 448 + 8, 3)


def test_main_job_options(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(default_image()[:100, :150]).save(src)
    out = tmp_path / "o.png"
    cmd = [sys.executable, "-m", "entropy_prune", "--image", str(src), "--method", "v2", "--alpha", "1.2",
           "--mode", "drop", "--score", "detail", "--out", str(out)]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    assert "150x100 px" in text and out.exists()
    bad = subprocess.run(cmd[:-2] + ["--method", "v3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_render_outlines_regions_and_dims_dropped_cells():
    img = np.full((56, 84, 3), 200, np.uint8)
    sel = select_patches(img, "budget", 0.5, mode="drop")
    pic = render_selection(img, sel, entropy_maps(img)[0])
    assert pic.shape == (56, 2 * 84 + 8, 3)
    dropped = np.argwhere(sel.label_map == 0)[0] * 28 + 10
    assert (pic[dropped[0], dropped[1]] == 50).all()
