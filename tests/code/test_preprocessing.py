"""Tests for catsdogs.preprocessing: real images built with Pillow and real sample photos."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from catsdogs.config import ImageLimits
from catsdogs.errors import RefusedInput
from catsdogs.preprocessing import PreparedImage, prepare_image, read_image
from helpers import SAMPLE_DIR
from helpers import photos as sample_photos

SIZE = 64


def _photos(label: str) -> list[Path]:
    photos = sample_photos(label)
    assert photos, f"no sample photos in {SAMPLE_DIR / label}"
    return photos


def _landscape_photo() -> Path:
    for path in _photos("cat") + _photos("dog"):
        with Image.open(path) as image:
            if image.width > image.height:
                return path
    raise AssertionError("no landscape sample photo")


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose pixel data is missing."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _reason(data: bytes, limits: ImageLimits | None = None) -> str:
    with pytest.raises(RefusedInput) as caught:
        if limits is None:
            prepare_image(data, SIZE)
        else:
            prepare_image(data, SIZE, limits)
    return caught.value.reason


def _assert_valid(result: PreparedImage, size: int = SIZE) -> None:
    assert isinstance(result, PreparedImage)
    assert result.pixels.shape == (size, size, 3)
    assert result.pixels.dtype == np.uint8


# --- accepted inputs ---------------------------------------------------------------------------


def test_rgb_jpeg_photo_has_shape_dtype_and_original_size() -> None:
    path = _photos("cat")[0]
    with Image.open(path) as original:
        width, height = original.size
    result = read_image(path, SIZE)
    _assert_valid(result)
    assert (result.width, result.height) == (width, height)
    # A real photo: not a constant image.
    assert result.pixels.std() > 10


def test_output_size_follows_image_size() -> None:
    data = _photos("dog")[0].read_bytes()
    for size in (32, 100, 224):
        _assert_valid(prepare_image(data, size), size)


def test_read_image_equals_prepare_image_of_the_bytes() -> None:
    path = _photos("dog")[1]
    from_path = read_image(path, SIZE)
    from_bytes = prepare_image(path.read_bytes(), SIZE)
    np.testing.assert_array_equal(from_path.pixels, from_bytes.pixels)
    assert (from_path.width, from_path.height) == (from_bytes.width, from_bytes.height)


def test_image_is_stretched_not_flipped_or_transposed() -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 50))  # top-right quarter blue
    result = prepare_image(_encode(image, "PNG"), SIZE)
    pixels = result.pixels.astype(int)
    assert (result.width, result.height) == (200, 100)
    np.testing.assert_array_equal(pixels[5, 5], [255, 0, 0])  # top left
    np.testing.assert_array_equal(pixels[5, SIZE - 5], [0, 0, 255])  # top right
    np.testing.assert_array_equal(pixels[SIZE - 5, SIZE - 5], [255, 0, 0])  # bottom right


def test_downscaling_averages_instead_of_sampling() -> None:
    # One-pixel black and white stripes halved in size average to gray (no aliasing).
    stripes = np.zeros((128, 128), np.uint8)
    stripes[:, ::2] = 255
    pixels = prepare_image(_encode(Image.fromarray(stripes), "PNG"), SIZE).pixels.astype(int)
    assert np.abs(pixels[:, 1:-1] - 128).max() <= 2  # the edge columns see one stripe less


def test_grayscale_l_becomes_gray_rgb() -> None:
    image = Image.new("L", (50, 40), 100)
    result = prepare_image(_encode(image, "PNG"), SIZE)
    _assert_valid(result)
    assert (result.width, result.height) == (50, 40)
    assert np.all(result.pixels == 100)


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    width = 256
    ramp = np.linspace(0, 65535, width).round().astype(np.uint16)
    values = np.tile(ramp, (64, 1))
    values[:32] = 32768  # top half: mid gray
    data = _encode(Image.fromarray(values), "PNG")
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "I;16"  # the test really feeds a 16-bit image
    result = prepare_image(data, width)
    _assert_valid(result, width)
    pixels = result.pixels.astype(int)
    # Gray: the three channels are equal.
    assert np.all(pixels[..., 0] == pixels[..., 1])
    assert np.all(pixels[..., 0] == pixels[..., 2])
    # 32768 / 65535 is half brightness (not 255, which clipping would give).
    assert abs(pixels[: width // 4, :, 0].mean() - 128) <= 1.5
    # The ramp spans the whole 8-bit range, monotonically.
    bottom = pixels[-1, :, 0]
    assert bottom[0] <= 1
    assert bottom[-1] >= 254
    assert np.all(np.diff(bottom) >= 0)
    assert abs(bottom[width // 2] - 128) <= 2


def test_bright_16_bit_image_is_bright() -> None:
    values = np.full((40, 40), 60000, np.uint16)
    result = prepare_image(_encode(Image.fromarray(values), "PNG"), SIZE)
    expected = 60000 * 255 / 65535  # ~233
    assert np.all(np.abs(result.pixels.astype(float) - expected) <= 1)


def test_dark_16_bit_image_stays_dark() -> None:
    # 200 of 65535 is 0.3% brightness: it must not be read as the 8-bit value 200.
    values = np.full((40, 40), 200, np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "I;16"
    result = prepare_image(data, SIZE)
    assert result.pixels.max() <= 1


def test_palette_image_keeps_its_colours() -> None:
    rgb = Image.new("RGB", (60, 60), (10, 200, 30))
    rgb.paste((250, 250, 0), (30, 0, 60, 60))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    data = _encode(palette, "PNG")
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "P"
    pixels = prepare_image(data, SIZE).pixels
    np.testing.assert_array_equal(pixels[10, 5], [10, 200, 30])
    np.testing.assert_array_equal(pixels[10, SIZE - 5], [250, 250, 0])


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (60, 60), (0, 255, 0, 0))  # green under full transparency
    image.paste((200, 0, 0, 255), (0, 0, 30, 60))  # left half opaque red
    data = _encode(image, "PNG")
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "RGBA"
    pixels = prepare_image(data, SIZE).pixels
    left, right = pixels[:, : SIZE // 2 - 2], pixels[:, SIZE // 2 + 2 :]
    assert np.all(left == [200, 0, 0])
    assert np.all(right == 255)  # white, not the green (or black) under the transparency


def test_palette_with_transparency_becomes_white() -> None:
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 20, 40))  # left half red; index 0 (black) is transparent
    data = _encode(image, "PNG", transparency=0)
    pixels = prepare_image(data, SIZE).pixels
    np.testing.assert_array_equal(pixels[5, 5], [255, 0, 0])
    np.testing.assert_array_equal(pixels[5, SIZE - 5], [255, 255, 255])


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    colour = (200, 40, 30)
    cmyk = Image.new("RGB", (64, 64), colour).convert("CMYK")
    data = _encode(cmyk, "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "CMYK"
    result = prepare_image(data, SIZE)
    _assert_valid(result)
    assert np.abs(result.pixels.astype(int) - colour).max() <= 8


def test_exif_rotated_photo_is_turned_upright() -> None:
    with Image.open(_landscape_photo()) as opened:
        photo = opened.convert("RGB")
    width, height = photo.size
    assert width > height

    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    rotated = prepare_image(_encode(photo, "JPEG", quality=95, exif=exif), SIZE)
    upright = prepare_image(
        _encode(photo.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=95), SIZE
    )
    ignoring_exif = prepare_image(_encode(photo, "JPEG", quality=95), SIZE)

    assert (rotated.width, rotated.height) == (height, width)
    assert (upright.width, upright.height) == (height, width)
    difference = np.abs(rotated.pixels.astype(float) - upright.pixels.astype(float)).mean()
    assert difference < 2
    # The comparison is meaningful: the unrotated photo is far from the upright one.
    assert np.abs(ignoring_exif.pixels.astype(float) - upright.pixels.astype(float)).mean() > 10


@pytest.mark.skipif(not features.check("webp"), reason="Pillow was built without WebP")
def test_webp_is_decoded() -> None:
    with Image.open(_photos("dog")[0]) as opened:
        photo = opened.convert("RGB")
    data = _encode(photo, "WEBP", lossless=True)
    result = prepare_image(data, SIZE)
    _assert_valid(result)
    assert (result.width, result.height) == photo.size
    reference = prepare_image(_encode(photo, "PNG"), SIZE)
    np.testing.assert_array_equal(result.pixels, reference.pixels)


def test_animated_gif_uses_its_first_frame() -> None:
    red = Image.new("RGB", (48, 48), (255, 0, 0))
    blue = Image.new("RGB", (48, 48), (0, 0, 255))
    data = _encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.n_frames == 2
    pixels = prepare_image(data, SIZE).pixels
    np.testing.assert_array_equal(pixels, np.broadcast_to([255, 0, 0], pixels.shape))


def test_png_with_jpg_name_is_decoded_by_content(tmp_path: Path) -> None:
    image = Image.new("RGB", (80, 60), (12, 34, 56))
    path = tmp_path / "photo.jpg"
    path.write_bytes(_encode(image, "PNG"))
    result = read_image(path, SIZE)
    assert (result.width, result.height) == (80, 60)
    assert np.all(result.pixels == [12, 34, 56])


def test_same_bytes_give_identical_arrays() -> None:
    data = _photos("cat")[3].read_bytes()
    first = prepare_image(data, SIZE)
    second = prepare_image(data, SIZE)
    np.testing.assert_array_equal(first.pixels, second.pixels)
    assert (first.width, first.height) == (second.width, second.height)


# --- rejected inputs ---------------------------------------------------------------------------


def test_empty_bytes_are_rejected() -> None:
    assert _reason(b"") == "empty"


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(RefusedInput) as caught:
        read_image(path, SIZE)
    assert caught.value.reason == "empty"


def test_text_file_is_not_an_image() -> None:
    assert _reason(b"cat,dog\n1,2\n" * 20) == "not_an_image"


def test_a_refused_image_carries_its_reason_status_and_message() -> None:
    with pytest.raises(RefusedInput, match=r"\w") as caught:
        prepare_image(b"not an image at all", SIZE)
    assert (caught.value.reason, caught.value.status) == ("not_an_image", 400)
    with pytest.raises(RefusedInput) as caught:
        prepare_image(_png_header_only(20_000, 20_000), SIZE)
    assert (caught.value.reason, caught.value.status) == ("too_many_pixels", 413)


def test_truncated_jpeg_is_corrupt() -> None:
    data = _photos("dog")[2].read_bytes()
    assert _reason(data[: len(data) // 2]) == "corrupt"


def test_png_without_pixel_data_is_corrupt() -> None:
    assert _reason(_png_header_only(500, 400)) == "corrupt"


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (31, 200), (200, 31)])
def test_tiny_image_is_too_small(size: tuple[int, int]) -> None:
    assert _reason(_encode(Image.new("RGB", size, (90, 90, 90)), "PNG")) == "too_small"


def test_smallest_side_allowed_is_accepted() -> None:
    _assert_valid(prepare_image(_encode(Image.new("RGB", (32, 32)), "PNG"), SIZE))


def _bomb_png(tmp_path: Path) -> Path:
    path = tmp_path / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(path, "PNG")
    assert path.stat().st_size < 100_000  # tiny on disk, 100 MP once decoded
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_without_decoding(tmp_path: Path) -> None:
    path = _bomb_png(tmp_path)
    assert _reason(path.read_bytes()) == "too_many_pixels"

    # Measure in a fresh process: Pillow allocates pixel memory outside Python's allocator
    # (invisible to tracemalloc), but the process' peak resident memory (VmHWM, which unlike
    # ru_maxrss is not inherited from the forking parent) sees it.
    # Decoding would need at least 100 MB (one byte per pixel).
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs /proc/self/status (Linux) to measure peak memory")
    child = """
import json, re, sys, warnings
from pathlib import Path
from catsdogs.errors import RefusedInput
from catsdogs.preprocessing import prepare_image
def peak_kib():
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmHWM:\\s+(\\d+) kB", status, re.M).group(1))
warnings.simplefilter("ignore")
data = Path(sys.argv[1]).read_bytes()
before = peak_kib()
try:
    prepare_image(data, 64)
    reason = None
except RefusedInput as error:
    reason = error.reason
print(json.dumps({"reason": reason, "peak_kib": peak_kib() - before}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", child, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        timeout=60,
    )
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    assert outcome["reason"] == "too_many_pixels"
    assert outcome["peak_kib"] < 20 * 1024, f"peak memory grew by {outcome['peak_kib']} KiB"


def test_header_beyond_pillow_bomb_limit_is_too_many_pixels() -> None:
    # 400 MP: Pillow itself raises DecompressionBombError while opening; that must still be
    # an RefusedInput, not an unexpected exception.
    assert _reason(_png_header_only(20_000, 20_000)) == "too_many_pixels"
    assert _reason(_png_header_only(20_000, 20_000), ImageLimits(max_pixels=10**12)) == (
        "too_many_pixels"
    )


def test_bytes_over_the_limit_are_too_large() -> None:
    data = _photos("cat")[0].read_bytes()
    assert len(data) > 1000
    assert _reason(data, ImageLimits(max_bytes=1000)) == "too_large"
    # The limit is inclusive.
    _assert_valid(prepare_image(data, SIZE, ImageLimits(max_bytes=len(data))))
    assert _reason(data, ImageLimits(max_bytes=len(data) - 1)) == "too_large"


def test_pixel_limit_is_configurable_and_inclusive() -> None:
    data = _encode(Image.new("RGB", (100, 50)), "PNG")
    _assert_valid(prepare_image(data, SIZE, ImageLimits(max_pixels=5000)))
    assert _reason(data, ImageLimits(max_pixels=4999)) == "too_many_pixels"


def test_min_side_is_configurable() -> None:
    path = _photos("cat")[0]
    with Image.open(path) as opened:
        assert min(opened.size) < 300
    data = path.read_bytes()
    _assert_valid(prepare_image(data, SIZE))  # accepted with the default limits
    assert _reason(data, ImageLimits(min_side=300)) == "too_small"
