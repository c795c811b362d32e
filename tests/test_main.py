import io
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from entropy_prune import entropy_maps, select_patches
from entropy_prune.__main__ import _default_image, main
from entropy_prune.visualize import render_selection


def run(argv, capsys):
    """main(argv) in this process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_main_job_prints_table_and_writes_png(tmp_path, capsys):
    out = tmp_path / "sel.png"
    assert main(["--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "budget      0.3   detail      76    256  29.7%" in text
    assert text.splitlines()[-1] == f"budget alpha=0.3 score=detail: 76 of 256 tokens -> wrote {out}"
    png = np.asarray(Image.open(out))
    assert png.shape[1] == 2 * 448 + 8 and 448 + 3 * 14 < png.shape[0] < 448 + 200  # panels, legend below


def test_main_job_options(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(_default_image()[:100, :150]).save(src)
    out = tmp_path / "o.png"
    cmd = [sys.executable, "-m", "entropy_prune", "--image", str(src), "--method", "v2", "--alpha", "1.2",
           "--mode", "drop", "--score", "detail", "--out", str(out)]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    assert "150x100 px" in text and out.exists()
    assert text.splitlines()[-1].startswith("v2 alpha=1.2 score=detail: ")
    bad = subprocess.run(cmd[:-2] + ["--method", "v3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_tolerance_removes_predictable_cells(tmp_path, capsys):
    """A page of flat bands: --tolerance 0 keeps only what its neighbours cannot predict, and the
    legend counts the removed cells."""
    page = np.full((168, 224, 3), 250, np.uint8)
    page[56:112] = (20, 90, 200)
    page[60:64, 30:190] = 0
    src, out = tmp_path / "page.png", tmp_path / "o.png"
    Image.fromarray(page).save(src)
    code, text, err = run(["--image", str(src), "--method", "none", "--tolerance", "0", "--out", str(out)], capsys)
    expected = select_patches(page, None, tolerance=0)
    assert code == 0 and err == "" and expected.num_tokens < 10
    assert "predictable cells removed (tolerance 0)" in text.splitlines()[0]
    assert text.splitlines()[-1] == f"none tolerance=0 score=entropy: {expected.num_tokens} of 48 tokens -> wrote {out}"
    none_row = next(row.split() for row in table(text) if row.startswith("none "))
    assert int(none_row[3]) == expected.num_tokens
    code, text, _ = run(["--image", str(src), "--method", "none", "--out", str(out)], capsys)
    assert next(row.split() for row in table(text) if row.startswith("none "))[3] == "48"


def test_render_outlines_regions_and_dims_dropped_cells():
    img = np.full((56, 84, 3), 200, np.uint8)
    sel = select_patches(img, "budget", 0.5, mode="drop")
    pic = render_selection(img, sel, entropy_maps(img)[0])
    assert pic.shape[0] > 56 and pic.shape[1] >= 2 * 84 + 8
    dropped = np.argwhere(sel.label_map == 0)[0] * 28 + 10
    assert (pic[dropped[0], dropped[1]] == 50).all()


def table(text):
    """The sweep table's rows of main's output."""
    return text.splitlines()[1:-1]


@pytest.mark.parametrize("mode, ext", [("I;16", "png"), ("I;16", "tif"), ("I", "tif"), ("F", "tif")])
def test_high_bit_depth_images_are_scored_on_their_range(tmp_path, capsys, mode, ext):
    """A 16-bit PNG was converted to 8-bit RGB by clipping at 255 (99.6% of a photograph went
    white). Now 16-bit gray is scored on [0, 65535], 32-bit integer and float gray on their
    min..max: the bundled photograph's gray in any of them gives the 8-bit gray's table."""
    gray8 = np.asarray(Image.fromarray(_default_image()).convert("L"))
    Image.fromarray(gray8).save(tmp_path / "gray8.png")
    stored = {"I;16": gray8.astype(np.uint16) * 257, "I": gray8.astype(np.int32) * 1000 - 7,
              "F": gray8.astype(np.float32) / 7}[mode]
    Image.fromarray(stored).save(tmp_path / f"deep.{ext}")
    assert Image.open(tmp_path / f"deep.{ext}").mode == mode
    code, ref, _ = run(["--image", str(tmp_path / "gray8.png"), "--out", str(tmp_path / "a.png")], capsys)
    assert code == 0
    code, got, err = run(["--image", str(tmp_path / f"deep.{ext}"), "--out", str(tmp_path / "b.png")], capsys)
    assert code == 0 and err == ""
    assert "scored on" in got.splitlines()[0]
    assert table(got) == table(ref)
    assert not (np.asarray(Image.open(tmp_path / "b.png"))[:448, :448] == 255).all(-1).mean() > 0.5


def expect_one_line_error(capsys, argv, words):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("entropy-prune: error: argument ")
    assert words in err


@pytest.mark.parametrize("name, content, words", [
    ("missing.png", None, "no such file"),
    ("empty.png", b"", "not a readable image"),
    ("text.png", b"hello, not an image\n", "not a readable image"),
    ("dir", "dir", "is a directory"),
])
def test_unreadable_image_files_give_one_line(tmp_path, capsys, name, content, words):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    expect_one_line_error(capsys, ["--image", str(path), "--out", str(tmp_path / "o.png")], f"--image: {path}: {words}")
    assert not (tmp_path / "o.png").exists()


_ENCODED = {}


def encoded(fmt):
    if fmt not in _ENCODED:
        buf = io.BytesIO()
        Image.fromarray(_default_image()[:64, :80]).save(buf, fmt)
        _ENCODED[fmt] = buf.getvalue()
    return _ENCODED[fmt]


@given(st.sampled_from(["PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"]), st.floats(0, 1, exclude_max=True))
def test_truncated_image_files_give_one_line(tmp_path_factory, fmt, fraction):
    """Any cut of a valid file: either a one-line error (exit 2, nothing on stdout) or, where
    the decoder copes (JPEG pads), a normal run."""
    data = encoded(fmt)
    path = tmp_path_factory.mktemp("cut") / f"cut.{fmt.lower()}"
    path.write_bytes(data[:int(fraction * len(data))])
    out, err = io.StringIO(), io.StringIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sys.stdout, sys.stderr = out, err
            code = main(["--image", str(path), "--out", str(path.with_suffix(".out.png"))])
    except SystemExit as e:
        code = e.code
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    if code == 2:
        assert out.getvalue() == "" and len(err.getvalue().strip().splitlines()) == 1
        assert "argument --image" in err.getvalue() and "not a readable image" in err.getvalue()
    else:
        assert code == 0 and err.getvalue() == ""


@pytest.mark.parametrize("argv, words", [
    (["--alpha", "2"], "--alpha: alpha for method 'budget' must be in (0, 1]"),
    (["--alpha", "nan"], "--alpha: alpha for method 'budget' must be in (0, 1]"),
    (["--alpha", "0"], "--alpha: alpha for method 'budget' must be in (0, 1]"),
    (["--method", "v2", "--alpha", "-1"], "--alpha: alpha for method 'v2' must be a finite number >= 0"),
    (["--method", "adaptive", "--alpha", "inf"], "--alpha: alpha for method 'v2' must be a finite number >= 0"),
    (["--patch-size", "0"], "--patch-size: must be an integer >= 1, got 0"),
    (["--patch-size", "-28"], "--patch-size: must be an integer >= 1, got -28"),
    (["--out", "noext"], "--out: must name a .png file, got 'noext'"),
    (["--out", "picture.jpg"], "--out: must name a .png file"),
    (["--tolerance", "-1"], "--tolerance: tolerance must be in [0, 255]"),
    (["--tolerance", "nan"], "--tolerance: tolerance must be in [0, 255]"),
    (["--downscale", "--method", "v2"], "--downscale: needs --method budget (it fits the image to the budget), got v2"),
])
def test_bad_settings_give_one_line_before_the_table(capsys, argv, words):
    expect_one_line_error(capsys, argv, words)


@pytest.mark.parametrize("rule", ["least_error", "balanced"])
def test_downscale_shrinks_the_budget_rows(tmp_path, capsys, rule):
    """--downscale: each budget row says the size it was selected on; tokens stay within the
    budget of the image's 256 cells; the picture shows the smaller image."""
    out = tmp_path / "o.png"
    code, text, _ = run(["--downscale", rule, "--alpha", "0.1", "--out", str(out)], capsys)
    assert code == 0 and f"budget rows downscale='{rule}'" in text.splitlines()[0]
    rows = {tuple(line.split()[:2]): line.split() for line in text.splitlines()[2:-1]}
    assert rows["none", "-"][-2:] == ["448x448", "px"]
    for alpha in ("0.1", "0.2", "0.3", "0.5"):
        tokens, size = int(rows["budget", alpha][3]), rows["budget", alpha][-2]
        assert tokens <= round(float(alpha) * 256) and int(size.split("x")[0]) % 28 == 0
    assert rows["budget", "0.1"][-2] != "448x448"  # 25 tokens: smaller images keep more
    assert text.splitlines()[-1].startswith(f"budget alpha=0.1 downscale='{rule}' score=detail: ")
    small = int(rows["budget", "0.1"][-2].split("x")[0])  # a square image stays square
    assert run(["--alpha", "0.1", "--out", str(tmp_path / "full.png")], capsys)[0] == 0
    heights = [np.asarray(Image.open(f)).shape[0] for f in (out, tmp_path / "full.png")]
    assert heights[1] - heights[0] == 448 - small  # same legend below a smaller image


def test_unwritable_out_gives_one_line_before_the_table(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    expect_one_line_error(capsys, ["--out", str(tmp_path / "file" / "sel.png")], "is not a directory")
    (tmp_path / "dir.png").mkdir()
    expect_one_line_error(capsys, ["--out", str(tmp_path / "dir.png")], "is a directory")


@pytest.mark.parametrize("argv, last", [
    (["--method", "v1", "--alpha", "5"], "v1 thresholds=3,2 score=entropy: 247 of 256 tokens"),
    (["--method", "threshold", "--mode", "drop", "--alpha", "5"], "threshold threshold=3 score=entropy: "),
    (["--method", "none", "--alpha", "5"], "none score=entropy: 256 of 256 tokens"),
    (["--method", "v2", "--alpha", "1"], "v2 alpha=1 score=entropy: 133 of 256 tokens"),
])
def test_echo_shows_only_settings_the_method_uses(tmp_path, capsys, argv, last):
    code, out, _ = run(argv + ["--out", str(tmp_path / "o.png")], capsys)
    assert code == 0 and out.splitlines()[-1].startswith(last)


def test_large_image_writes_a_bounded_picture(tmp_path, capsys):
    """8000 x 8000 px: the picture was 16000 x 8000 (a decompression-bomb warning when opened);
    now it is at most 4096 px on its long side, and opens without warnings."""
    rows, cols = (np.arange(8000) // 89 % 7).astype(np.uint8), (np.arange(8000) // 97 % 7).astype(np.uint8)
    Image.fromarray((rows[:, None] + cols) % 7 * 36).save(tmp_path / "big.bmp")
    code, out, err = run(["--image", str(tmp_path / "big.bmp"), "--out", str(tmp_path / "o.png")], capsys)
    assert code == 0 and err == "" and "8000x8000 px" in out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Image.open(tmp_path / "o.png") as picture:
            size = picture.size
    assert max(size) <= 4096 and min(size) > 2000
