"""--calib with a folder of images: decoded, resized, mapped by --pixel-range."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tinyc import api

from .conftest import EXAMPLES

Image = pytest.importorskip("PIL.Image", reason="Pillow is needed to write test images")


def tinyc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tinyc.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _digit_pngs(folder, count=24):
    from sklearn.datasets import load_digits

    folder.mkdir()
    digits = load_digits().images[:count]  # 0..16
    for k, d in enumerate(digits):
        Image.fromarray(np.round(d * (255 / 16)).astype(np.uint8), mode="L").save(folder / f"{k:03}.png")
    return (np.round(digits * (255 / 16)) / 255).astype(np.float32)


def test_image_folder_calibrates_like_the_same_pixels_as_npy(tmp_path):
    x = _digit_pngs(tmp_path / "imgs")
    model = EXAMPLES / "digits_cnn.onnx"
    np.save(tmp_path / "cal.npy", x[:, None, None])  # (N, 1, 1, 8, 8): [0, 1] like the images
    from_images, from_npy = api.load(model), api.load(model)
    api.quantize_with_calibration(from_images, tmp_path / "imgs")
    api.quantize_with_calibration(from_npy, tmp_path / "cal.npy")
    for name, t in from_images.tensors.items():
        if t.quant is not None and not t.is_const:
            other = from_npy.tensors[name].quant  # equal up to float rounding of the pixel values
            assert np.allclose(t.quant.scale, other.scale, rtol=1e-5), name
            assert np.array_equal(t.quant.zero_point, other.zero_point), name
    # and through the command line, --pixel-range changes what the pixels mean
    for rng in ("0,1", "-1,1"):
        r = tinyc("build", model, "--calib", tmp_path / "imgs", "--pixel-range", rng, "-o", tmp_path / f"p{rng}")
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "p0,1" / "digits_cnn.c").read_text() != (tmp_path / "p-1,1" / "digits_cnn.c").read_text()


def test_image_resized_to_the_input(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    Image.fromarray(np.full((32, 40, 3), 200, np.uint8), mode="RGB").save(folder / "a.jpg")
    g = api.load(EXAMPLES / "digits_cnn.onnx")
    (sample,) = api.read_calibration(g, folder)
    x = sample[g.inputs[0]]
    assert x.shape == g.tensors[g.inputs[0]].shape
    assert np.allclose(x, 200 / 255, atol=2 / 255)


def test_unreadable_image(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    r = tinyc("build", EXAMPLES / "digits_cnn.onnx", "--calib", folder, "-o", tmp_path / "p")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "broken.png" in r.stderr and "cannot read the image" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("bad", ["1", "1,0", "a,b", "0,1,2"])
def test_bad_pixel_range(tmp_path, bad):
    r = tinyc("build", EXAMPLES / "digits_cnn.onnx", "--calib", tmp_path, "--pixel-range", bad, "-o", tmp_path / "p")
    assert r.returncode == 2 and "--pixel-range" in r.stderr and len(r.stderr.strip().splitlines()) == 1
