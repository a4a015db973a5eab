
import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage.color import rgb2lab

from hostile_files import exif_with_orientation, hostile, jpeg_bytes, photo, write_deep_gray  # noqa: F401
from pipeline.images import (ImageError, _decode_cv2_fallback, is_grayscale, lab_to_rgb, load_rgb, orient,
                             resize_center_crop, rgb_to_lab)


def _mean_abs(a, b):
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()


def test_every_hostile_file_decodes_or_fails_with_its_reason(hostile):
    folder, expected = hostile
    for name, outcome in expected.items():
        if outcome in ("truncated", "empty", "unknown format"):
            with pytest.raises(ImageError) as e:
                load_rgb(folder / name)
            assert e.value.kind == outcome, name
        else:
            rgb = load_rgb(folder / name)
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, name
    with pytest.raises(ImageError, match="missing"):
        load_rgb(folder / "no_such_file.jpg")


def test_formats_decode_to_the_source_colours(hostile):
    folder, _ = hostile
    assert np.array_equal(load_rgb(folder / "png_named.jpg"), photo("coffee"))      # PNG named .jpg: lossless
    assert np.array_equal(load_rgb(folder / "bitmap.jpg"), photo("rocket"))
    assert np.array_equal(load_rgb(folder / "deep16.jpg"), photo("rocket"))         # 16-bit: v * 257 -> v
    assert _mean_abs(load_rgb(folder / "photo.jpg"), photo("astronaut")) < 4
    assert _mean_abs(load_rgb(folder / "cmyk.jpg"), photo("chelsea")) < 4            # not inverted, not BGR
    assert _mean_abs(load_rgb(folder / "palette_gif.jpg"), photo("chelsea")) < 8


@pytest.fixture(scope="module")
def deep_gray(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deep_gray")
    return folder, write_deep_gray(folder)


def test_deep_images_are_scaled_by_their_bit_depth_not_their_values(deep_gray):
    """16-bit gray holding 0..255 is almost black (0..1 in 8 bits), not a full-range image; 16-bit with alpha,
    32-bit integer and float TIFFs likewise by what the file declares."""
    folder, expected = deep_gray
    for name, want in expected.items():
        rgb = load_rgb(folder / name)
        want = want if want.ndim == 3 else np.dstack([want] * 3)
        assert rgb.shape == want.shape and rgb.dtype == np.uint8, name
        assert np.abs(rgb.astype(int) - want).max() <= 1, (name, rgb.max(), want.max())
    assert load_rgb(folder / "dark16.png").max() <= 1                  # values 8..255 of 65535


def test_opencv_fallback_scales_16_bit_gray_by_depth_too(deep_gray):
    """What Pillow rejects goes to OpenCV, which keeps the high byte of 16-bit samples: dark stays dark."""
    folder, expected = deep_gray
    for name in ("dark16.png", "gray16.png", "dark16.tif"):
        rgb = _decode_cv2_fallback((folder / name).read_bytes(), name.split(".")[1], "test")
        assert np.abs(rgb.astype(int) - expected[name][..., None]).max() <= 1, name


def test_colorize_keeps_a_dark_16_bit_gray_scan_dark(deep_gray, tiny_runs, tmp_path):
    """colorize takes its output's lightness from the input: a near-black 16-bit scan must come out near black."""
    from click.testing import CliRunner
    from cli import cli
    folder, _ = deep_gray
    res = CliRunner().invoke(cli, ["colorize", str(folder / "dark16.png"), "--checkpoint", str(tiny_runs[1]["ce"]),
                                   "--out", str(tmp_path / "out"), "--size", "32", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    L = rgb_to_lab(load_rgb(tmp_path / "out" / "dark16.png"))[..., 0]
    assert L.shape == (96, 128) and L.max() < 2.0, L.max()             # 8-bit 0..1 is L* below 0.3


def test_alpha_is_dropped_not_composited(hostile):
    folder, _ = hostile
    # the left column is fully transparent: its stored colour survives (compositing would make it white)
    assert np.array_equal(load_rgb(folder / "rgba.jpg"), photo("coffee"))


def test_exif_rotation_is_applied_like_a_photo_viewer(hostile):
    folder, _ = hostile
    rgb = load_rgb(folder / "rotated.jpg")                   # stored 96 x 128 with orientation 6
    reference = np.rot90(photo("astronaut", 96, 128), -1)    # 90 degrees clockwise
    assert rgb.shape == reference.shape == (128, 96, 3)
    assert _mean_abs(rgb, reference) < 4
    assert _mean_abs(rgb, np.rot90(photo("astronaut", 96, 128), 1)) > 20


@pytest.mark.parametrize("k", range(1, 9))
def test_orient_matches_pillow_exif_transpose(tmp_path, k):
    src = photo("coffee", 24, 40)
    path = tmp_path / "o.png"
    Image.fromarray(src).save(path, exif=exif_with_orientation(k))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.array_equal(orient(src, k), expected)
    assert np.array_equal(load_rgb(path), expected)


def test_truncated_jpeg_with_exif_thumbnail_is_still_truncated(tmp_path):
    # an EXIF thumbnail carries its own SOS/EOI near the start; the check must not take it for the main image's
    thumb = jpeg_bytes(photo("chelsea", 16, 16))
    exif = Image.Exif()
    exif[0x0112] = 1
    full = jpeg_bytes(photo("astronaut", 120, 160), exif=exif.tobytes() + thumb)
    (tmp_path / "t.jpg").write_bytes(full[: len(full) - 200])
    with pytest.raises(ImageError, match="truncated"):
        load_rgb(tmp_path / "t.jpg")
    (tmp_path / "ok.jpg").write_bytes(full + b"\0" * 100)   # trailing bytes after EOI are fine
    assert load_rgb(tmp_path / "ok.jpg").shape == (120, 160, 3)


def test_reduced_jpeg_decoding_matches_full_decode_and_area_resize(tmp_path):
    big = photo("astronaut", 480, 640)
    (tmp_path / "big.jpg").write_bytes(jpeg_bytes(big))
    full = load_rgb(tmp_path / "big.jpg")
    half = load_rgb(tmp_path / "big.jpg", min_side=200)      # 480 // 2 >= 200 -> decoded at 1/2 scale
    assert full.shape == (480, 640, 3) and half.shape == (240, 320, 3)
    assert _mean_abs(resize_center_crop(half, 64), resize_center_crop(full, 64)) < 2


def test_grayscale_is_judged_by_chroma_not_mode(hostile):
    folder, _ = hostile
    assert is_grayscale(load_rgb(folder / "gray3.jpg"))      # three equal channels, saved as colour JPEG
    assert not is_grayscale(load_rgb(folder / "photo.jpg"))
    gray = np.full((64, 64, 3), 128, np.uint8)
    gray[:8, :8] = (200, 30, 30)                             # a red patch on 1.6 % of the pixels is colour
    assert not is_grayscale(gray)


def test_resize_center_crop_keeps_the_centre():
    rgb = np.zeros((60, 180, 3), np.uint8)
    rgb[:, :60] = (255, 0, 0)
    rgb[:, 60:120] = (0, 255, 0)
    rgb[:, 120:] = (0, 0, 255)
    out = resize_center_crop(rgb, 32)
    assert out.shape == (32, 32, 3) and np.all(out == (0, 255, 0))
    assert resize_center_crop(photo(h=20, w=30), 32).shape == (32, 32, 3)   # small images are enlarged


def test_resize_center_crop_averages_when_shrinking_a_lot():
    """A 1-px checkerboard shrunk 2.56x must come out about flat grey (every pixel averaged), not in aliased
    stripes (bilinear sampling would leave values up to 118 away from grey)."""
    board = ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)
    out = resize_center_crop(np.repeat(board[..., None], 3, axis=2), 100)
    assert np.abs(out.astype(int) - 128).max() <= 10


def test_lab_agrees_with_skimage_and_round_trips():
    rgb = photo("chelsea", 48, 64)
    lab = rgb_to_lab(rgb)
    assert lab.dtype == np.float32 and lab.shape == (48, 64, 3)
    assert 0 <= lab[..., 0].min() and lab[..., 0].max() <= 100
    assert np.abs(lab - rgb2lab(rgb)).max() < 0.5
    back = np.abs(lab_to_rgb(lab).astype(int) - rgb)
    assert back.max() <= 1 and (back == 0).mean() > 0.99                # rounded, not truncated, back to 8 bits


def test_lightness_of_greys_is_the_cie_formula_with_white_at_100():
    """sRGB v / 255 (not / 256), linearised, Y -> L* = 116 Y^(1/3) - 16: white is exactly 100, greys within
    OpenCV's float-path error (~0.19) of the formula written out."""
    v = np.arange(256)
    grey = np.repeat(v.astype(np.uint8)[:, None, None], 3, axis=2).reshape(16, 16, 3)
    lab = rgb_to_lab(grey).reshape(256, 3)
    c = v / 255
    Y = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    L = np.where(Y > (6 / 29) ** 3, 116 * np.cbrt(Y) - 16, Y * (29 / 3) ** 3)
    assert lab[255, 0] == pytest.approx(100.0, abs=0.01) and lab[0, 0] == 0
    assert np.abs(lab[:, 0] - L).max() < 0.2 and np.abs(lab[:, 1:]).max() < 0.2
