"""Still-image I/O: decoding with PyAV/FFmpeg to upright RGB arrays, alpha, ICC profile and EXIF, and writing.

Pictures cross this module's boundary as H x W x 3 RGB (or H x W x 4 RGBA) numpy arrays, uint8 or uint16 over the
full 0..65535 range, like video frames in :mod:`elan_video.media.video`. Decoding goes through FFmpeg (16-bit PNG
and TIFF stay 16-bit), HEIC/HEIF through pillow-heif; Pillow reads the header (EXIF orientation, ICC profile) and
writes the 8-bit formats.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from ..errors import InputError, OptionError, WarnCallback, default_warn
from .animation import write_animation
from .heif import HEIF_SUFFIXES, is_heif, pillow_reads_heif
from .video.pixels import has_alpha, luma
from .video.probe import check_source, first_frame_alpha, main_video, open_input
from .video.reader import DecodedFrame, VideoReader

__all__ = [
    "ALPHA_SUFFIXES",
    "IMAGE_SUFFIXES",
    "PhotoTags",
    "eight_bit",
    "frame_count",
    "is_image_path",
    "read_alpha",
    "read_image",
    "read_photo_tags",
    "resize",
    "write_image",
]

_NETPBM_SUFFIXES = (".ppm", ".pgm", ".pbm", ".pnm")
IMAGE_SUFFIXES = (
    *(".png", ".jpg", ".jpeg", ".jfif", ".jpe", ".bmp", ".tif", ".tiff", ".webp", ".avif", ".gif", *HEIF_SUFFIXES),
    *(*_NETPBM_SUFFIXES, ".tga", ".jp2", ".j2k", ".qoi"),
)
# Still-image formats with an alpha channel.
ALPHA_SUFFIXES = (".png", ".tif", ".tiff", ".webp", ".avif", ".gif", *HEIF_SUFFIXES, ".tga", ".jp2", ".j2k", ".qoi")
# Pillow's format names where they are not the suffix in capitals.
_PILLOW_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".jfif": "JPEG", ".jpe": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
_PILLOW_FORMATS |= {".heic": "HEIF", ".heif": "HEIF"}
_PILLOW_FORMATS |= dict.fromkeys(_NETPBM_SUFFIXES, "PPM") | {".jp2": "JPEG2000", ".j2k": "JPEG2000"}
# Netpbm names its grey and bilevel variants by suffix; Pillow picks the variant by the picture's mode.
_NETPBM_MODES = {".pgm": "L", ".pbm": "1"}


def is_image_path(path: str | Path) -> bool:
    """True when the file name has a still-image suffix (:data:`IMAGE_SUFFIXES`: PNG, JPEG, BMP, TIFF, WebP, AVIF,
    GIF, HEIC/HEIF, Netpbm, TGA, JPEG 2000, QOI)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _decode_heif(path: Path) -> np.ndarray:
    """H x W x 3 (RGB) or x 4 (RGBA) uint8 of a HEIF file's primary picture, already upright: libheif applies
    the file's rotation and mirroring, and reports the EXIF orientation as 1."""
    from PIL import Image, UnidentifiedImageError

    pillow_reads_heif()
    try:
        with warnings.catch_warnings():
            # A large panorama is a photograph, not the decompression bomb Pillow warns about.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(check_source(path)) as image:
                mode = "RGBA" if "A" in image.mode else "RGB"
                return np.array(image.convert(mode))  # a writable copy: torch refuses read-only arrays
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: the HEIF image cannot be decoded ({exc})") from None


def read_image(path: str | Path) -> np.ndarray:
    """Decode a still image to H x W x 3 RGB: uint8, or uint16 (0..65535) for 16-bit PNG/TIFF (HEIC: 8 bits).

    The picture comes upright: an EXIF orientation (a phone's portrait JPEG) is applied to the pixels, and
    :func:`read_photo_tags` reports the orientation as 1 for the image written from them.
    """
    if is_heif(path):
        return np.ascontiguousarray(_decode_heif(Path(path))[..., :3])
    try:
        with VideoReader(path) as reader:
            for item in reader.items():
                if isinstance(item, DecodedFrame):
                    return _upright(item.image, _photo_header(Path(path))[0])
    except InputError as exc:
        # FFmpeg decodes images as one-frame videos; say "image", not its "video stream".
        detail = str(exc).removeprefix(f"{path}: ")
        raise InputError(f"{path}: cannot be decoded as an image ({detail})") from None
    raise InputError(f"{path}: no picture could be decoded")


def eight_bit(image: np.ndarray) -> np.ndarray:
    """A uint16 picture (0..65535) rounded to uint8 (0..255); a uint8 one as it is."""
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return image


def resize(image: np.ndarray, *, width: int, height: int) -> np.ndarray:
    """An H x W x 3 (RGB) or x 4 (RGBA) uint8/uint16 picture resized to ``width`` x ``height`` with swscale's
    Lanczos, same dtype."""
    formats = {(3, np.uint8): "rgb24", (3, np.uint16): "rgb48le", (4, np.uint8): "rgba", (4, np.uint16): "rgba64le"}
    fmt = formats[(image.shape[2], image.dtype.type)]
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
    return frame.reformat(width=width, height=height, interpolation="LANCZOS").to_ndarray()


def read_alpha(path: str | Path) -> np.ndarray | None:
    """The alpha channel of a still image as H x W (uint8, or uint16 over 0..65535 where :func:`read_image`
    gives uint16), turned upright like it; None when the image has none or is fully opaque."""
    p = check_source(path)
    if is_heif(p):
        picture = _decode_heif(p)
        opaque = picture.shape[2] == 3 or int(picture[..., 3].min()) == 255
        return None if opaque else np.ascontiguousarray(picture[..., 3])
    with open_input(p) as container:
        stream = main_video(container, p)
        fmt = stream.codec_context.format
        if fmt is None or not (fmt.has_palette or has_alpha(fmt)):  # a palette may have transparent entries
            return None
        alpha = first_frame_alpha(container, stream)
    return None if alpha is None else _upright(alpha[..., None], _photo_header(p)[0])[..., 0]


@dataclass(frozen=True)
class PhotoTags:
    """What a still image says besides its pixels and should keep saying after upscaling.

    icc_profile: the ICC colour profile (what the RGB numbers mean: a phone's Display P3, a camera's Adobe RGB);
    exif: the EXIF block (camera, date taken, ...) as Pillow writes it, orientation set to 1 because
    :func:`read_image` applies it. None where the file has none. grey: the file holds grey pixels (a scan, a
    black-and-white photo), which :func:`write_image` writes grey again where the format can.
    """

    icc_profile: bytes | None = None
    exif: bytes | None = None
    grey: bool = False


def frame_count(path: str | Path) -> int:
    """How many pictures an image file holds (APNG, animated WebP or AVIF: more than one); 1 where Pillow cannot
    tell."""
    return _photo_header(Path(path))[2]


def read_photo_tags(path: str | Path) -> PhotoTags:
    """The ICC profile and EXIF of an image file (empty where it has none or Pillow cannot read its header)."""
    return _photo_header(Path(path))[1]


def _photo_header(path: Path) -> tuple[int, PhotoTags, int]:
    """(EXIF orientation 1..8, tags, number of pictures) from the image's header; (1, no tags, 1) where Pillow
    cannot read it (FFmpeg decodes some files Pillow does not)."""
    from PIL import Image, UnidentifiedImageError

    if is_heif(path):
        pillow_reads_heif()
    try:
        with warnings.catch_warnings():
            # Only the header is read; Pillow's pixel-count guard is about decoding, which FFmpeg does here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                # A camera JPEG's MPF pictures (previews, depth maps, stereo views) and a HEIF file's other
                # images (bursts, edits) are not an animation's frames.
                still = image.format in ("MPO", "HEIF")
                pictures = 1 if still else max(1, int(getattr(image, "n_frames", 1)))
                icc = image.info.get("icc_profile") or None
                exif = image.getexif()
                for tag in _LAYOUT_TAGS:
                    exif.pop(tag, None)
                orientation = exif.get(0x0112, 1)
                if 0x0112 in exif:
                    exif[0x0112] = 1
                # Inside the with: a TIFF's EXIF is read from the open file as it is serialised.
                exif_bytes = exif.tobytes() if len(exif) else None
                grey = image.mode in _GREY_MODES
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 1, PhotoTags(), 1
    valid = isinstance(orientation, int) and 1 <= orientation <= 8
    return (orientation if valid else 1), PhotoTags(icc_profile=icc, exif=exif_bytes, grey=grey), pictures


# Pillow reports a TIFF's own first directory as its EXIF, tags that lay out the stored pixels (size, depth,
# compression, strips or tiles, colour map, ICC profile) among the camera's. Written with a different picture
# they contradict it: libtiff refuses to write the file ("codec configuration error"), PNG's eXIf misstates it.
_LAYOUT_TAGS = (
    *(254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320),
    *(322, 323, 324, 325, 330, 338, 339, 340, 341, 347, 513, 514, 529, 530, 531, 532, 34675),
)


def _upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation ``orientation`` to an H x W x C array (the transposes of Pillow's exif_transpose)."""
    turned = {
        1: image,
        2: image[:, ::-1],
        3: image[::-1, ::-1],
        4: image[::-1],
        5: image.transpose(1, 0, 2),
        6: np.rot90(image, -1),
        7: image[::-1, ::-1].transpose(1, 0, 2),
        8: np.rot90(image, 1),
    }[orientation]
    return np.ascontiguousarray(turned)


def write_image(
    path: str | Path, image: np.ndarray, *, tags: PhotoTags | None = None, warn: WarnCallback | None = None
) -> None:
    """Write H x W x 3 RGB (or H x W x 4 RGBA) uint8/uint16 to ``path`` in the format its suffix names.

    uint16 is kept in PNG and TIFF; other formats get 8 bits (rounded). Alpha is kept where the format has it
    (:data:`ALPHA_SUFFIXES`; GIF's is one bit, see :func:`elan_video.media.animation.write_animation`) and dropped
    with a warning elsewhere. ``tags`` (from :func:`read_photo_tags`) are written where the format holds them,
    the EXIF pixel dimensions set to this image's; ``warn`` hears what could not be (an ICC profile in BMP or
    GIF, any tag in 16-bit TIFF).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    tags = tags or PhotoTags()
    warn = warn or default_warn
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise OptionError(f"image must be H x W x 3 (RGB) or H x W x 4 (RGBA), got shape {image.shape}")
    if image.shape[2] == 4 and suffix not in ALPHA_SUFFIXES:
        warn(f"{p.name}: {suffix} has no alpha channel; the transparency is dropped")
        image = image[..., :3]
    rgba = image.shape[2] == 4
    deep = image.dtype == np.uint16 and suffix in (".png", ".tif", ".tiff")
    grey = tags.grey and suffix in (_GREY_ALPHA_SUFFIXES if rgba else _GREY_SUFFIXES) and not (deep and rgba)
    if grey:
        image = _grey(image)
    space = (tags.icc_profile or b"")[16:20]  # the ICC header's data colour space
    if tags.icc_profile and space != (b"GRAY" if grey else b"RGB "):
        # A CMYK source, or a grey one written here as RGB: its profile would misdescribe these pixels.
        name = space.decode("ascii", "replace").strip()
        warn(f"{p.name}: the source's ICC profile is for {name} pixels, not {'grey' if grey else 'RGB'}; not written")
        tags = replace(tags, icc_profile=None)
    exif = _exif_sized(tags.exif, image.shape[1], image.shape[0]) if tags.exif else None
    if deep:
        src = "gray16le" if grey else "rgba64le" if rgba else "rgb48le"
        codec, fmt = ("png", src.replace("le", "be")) if suffix == ".png" else ("tiff", src)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=src).reformat(format=fmt)
        cc = av.CodecContext.create(codec, "w")
        cc.width, cc.height, cc.pix_fmt = image.shape[1], image.shape[0], fmt
        cc.time_base = Fraction(1, 25)
        data = b"".join(bytes(pkt) for pkt in [*cc.encode(frame), *cc.encode(None)])
        if suffix == ".png":
            data = _png_with_tags(data, tags.icc_profile, exif)
        elif tags.icc_profile or exif:
            warn(f"{p.name}: 16-bit TIFF is written without the source's ICC profile and EXIF")
        p.write_bytes(data)
        return
    from PIL import Image

    image = eight_bit(image)
    fmt = _PILLOW_FORMATS.get(suffix, suffix.lstrip(".").upper())
    if fmt == "HEIF":
        pillow_reads_heif()
    options: dict[str, object] = {"quality": 95} if fmt in ("JPEG", "WEBP", "AVIF", "HEIF") else {}
    if fmt in ("PNG", "JPEG", "WEBP", "AVIF", "TIFF", "HEIF"):
        if tags.icc_profile:
            options["icc_profile"] = tags.icc_profile
        if exif and not (fmt == "JPEG" and len(exif) > _JPEG_APP1_MAX):
            options["exif"] = exif
        elif exif:
            warn(f"{p.name}: the source's EXIF ({len(exif)} bytes) does not fit a JPEG segment; not written")
    elif tags.icc_profile or exif:
        warn(f"{p.name}: {fmt} cannot hold the source's ICC profile and EXIF; not written")
    if fmt == "GIF":  # one-bit transparency and a palette, as for an animation's pictures
        write_animation(p, [image], durations_ms=[0], loop=None)
        return
    picture = Image.fromarray(np.ascontiguousarray(image))
    if suffix in _NETPBM_MODES:
        picture = picture.convert(_NETPBM_MODES[suffix])
    picture.save(p, format=fmt, **options)


_JPEG_APP1_MAX = 65533  # a JPEG marker segment's payload limit, less the "Exif" header Pillow adds
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N")
# Formats that store grey (WebP and QOI only RGB), and those that store it with alpha; 16-bit grey with alpha
# is written as RGBA.
_GREY_SUFFIXES = tuple(s for s in IMAGE_SUFFIXES if s not in (".webp", ".qoi", ".gif"))
_GREY_ALPHA_SUFFIXES = (".png", ".tif", ".tiff", ".tga", ".jp2", ".j2k")


def _grey(image: np.ndarray) -> np.ndarray:
    """H x W x 3 (or x 4) -> H x W (or x 2, with the alpha) of the same dtype: the luma. The source was grey, so
    R, G and B differ only where the network's outputs disagree by a few levels."""
    return np.dstack([luma(image), image[..., 3]]) if image.shape[2] == 4 else luma(image)


def _exif_sized(exif: bytes, width: int, height: int) -> bytes:
    """The EXIF block with its pixel dimensions (Exif IFD PixelXDimension/PixelYDimension, where present) set."""
    from PIL import Image

    tags = Image.Exif()
    tags.load(exif)
    ifd = tags.get_ifd(0x8769)
    for key, value in ((0xA002, width), (0xA003, height)):
        if key in ifd:
            ifd[key] = value
    return tags.tobytes()


def _png_with_tags(png: bytes, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP and eXIf chunks after a PNG's IHDR (PyAV's PNG encoder writes neither)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    extra = b""
    if icc_profile:
        extra += chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile))
    if exif:
        extra += chunk(b"eXIf", exif.removeprefix(b"Exif\0\0"))  # PNG's holds the TIFF structure alone
    ihdr_end = 8 + 8 + 13 + 4  # signature, then IHDR's length, type, 13 bytes of data and CRC
    return png[:ihdr_end] + extra + png[ihdr_end:]
