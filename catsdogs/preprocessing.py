"""Image decoding and preprocessing: the one definition used by training, evaluation and serving.

Raw bytes in, a square RGB uint8 array out. Scaling to the network's value range happens inside
the saved model, so the model's input is exactly what this module returns.
"""

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from catsdogs.config import ImageLimits
from catsdogs.errors import TOO_LARGE, RefusedInput

DEFAULT_LIMITS = ImageLimits()

# Pillow modes that hold more than 8 bits per channel; convert("RGB") would clip them.
_WIDE_GRAY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_EXIF_ORIENTATION = 0x0112
_SIDEWAYS_ORIENTATIONS = {5, 6, 7, 8}  # rotated by 90 or 270 degrees


@dataclass(frozen=True)
class PreparedImage:
    pixels: np.ndarray  # (size, size, 3) uint8, RGB, upright
    width: int  # of the original image, after EXIF rotation
    height: int


def prepare_image(
    data: bytes, image_size: int, limits: ImageLimits = DEFAULT_LIMITS
) -> PreparedImage:
    """Decode an encoded image (any format Pillow reads, judged by content, not by name),
    apply its EXIF orientation, convert it to RGB and resize it to image_size x image_size.

    Raises RefusedInput for empty, oversized, non-image, corrupt, truncated or tiny input.
    """
    if not data:
        raise RefusedInput("empty", "the file is empty")
    if len(data) > limits.max_bytes:
        raise RefusedInput(
            "too_large",
            f"the file has {len(data)} bytes; the limit is {limits.max_bytes}",
            TOO_LARGE,
        )
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RefusedInput(
            "not_an_image", "the file is not an image in a format we can read"
        ) from None
    except Image.DecompressionBombError as error:
        # Pillow refuses images above 2 x MAX_IMAGE_PIXELS already in open(), from the header.
        raise RefusedInput(
            "too_many_pixels", f"the image is too large: {error}", TOO_LARGE
        ) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise RefusedInput("corrupt", f"the image header is corrupt: {error}") from error

    width, height = image.size
    if width * height > limits.max_pixels:
        raise RefusedInput(
            "too_many_pixels",
            f"the image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels",
            TOO_LARGE,
        )
    if min(width, height) < limits.min_side:
        raise RefusedInput(
            "too_small",
            f"the image is {width}x{height} pixels; each side must be at least {limits.min_side}",
        )
    target = (image_size, image_size)
    try:
        # JPEG only: decode at a reduced scale that is still at least image_size on each side.
        # Several times faster for large photos, and identical in training and serving.
        image.draft("RGB", (image_size, image_size))
        image.load()  # the full decode: raises on truncated or corrupt data
        if image.getexif().get(_EXIF_ORIENTATION) in _SIDEWAYS_ORIENTATIONS:
            width, height = height, width
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of upright images
        if image.mode in _WIDE_GRAY_MODES:
            # Resized in its own mode first, then scaled to 8 bits: converting at full size
            # would take several float copies of a possibly huge image.
            resized = _wide_gray_to_rgb(image.resize(target, Image.Resampling.BILINEAR))
        else:
            resized = _to_rgb(image).resize(target, Image.Resampling.BILINEAR)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise RefusedInput("corrupt", f"the image data is corrupt or truncated: {error}") from error
    return PreparedImage(np.asarray(resized, dtype=np.uint8), width, height)


def image_statistics(pixels: np.ndarray) -> tuple[float, float]:
    """(brightness, saturation) of prepared RGB pixels, each 0..1: the mean pixel value and the
    mean HSV saturation. Drift features of the inputs, computed the same way in serving and
    for the training-time reference."""
    brightness = float(pixels.mean(dtype=np.float32)) / 255.0
    top = pixels.max(axis=-1).astype(np.float32)
    spread = top - pixels.min(axis=-1)
    saturation = np.divide(spread, top, out=np.zeros_like(top), where=top > 0)
    return brightness, float(saturation.mean())


def decode_pixels(data: bytes, image_size: int) -> int:
    """How many pixels prepare_image will decode, from the header alone (0 when the header
    cannot be read: prepare_image then refuses the file quickly). JPEGs decode at a reduced
    scale, so a large JPEG costs far less than a PNG or TIFF of the same size."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if image.format == "JPEG":
                scale = min(8, max(1, min(width, height) // image_size))
                # Pillow's draft scales are 1, 2, 4 and 8.
                scale = 1 << (scale.bit_length() - 1)
                return (width // scale) * (height // scale)
            return width * height
    except Exception:
        return 0


def read_image(path: Path, image_size: int, limits: ImageLimits = DEFAULT_LIMITS) -> PreparedImage:
    """prepare_image for a file on disk."""
    return prepare_image(Path(path).read_bytes(), image_size, limits)


def _wide_gray_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float32)
    # I;16* are 16-bit by definition (even if dark); I and F may hold 8-bit values.
    wide = image.mode.startswith("I;16") or values.max(initial=0) > 255
    top = 65535.0 if wide else 255.0
    gray = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels have arbitrary colour underneath: show them on white.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")  # convert() would copy
