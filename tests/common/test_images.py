"""The shared image decoder: bombs stopped from the header, truncation found by decoding,
foreign formats refused, and every problem a BadImage naming the file."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.hostile.damage import png_bomb
from workflow.common.errors import BadSample
from workflow.common.images import BadImage, decode_image, image_size, max_pixels_set


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_good_image_decodes_from_a_file_or_bytes(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg())
    assert image_size(path) == (64, 48)
    image = decode_image(path)
    assert image.mode == "RGB" and image.size == (64, 48)
    assert decode_image(jpeg(), "shard.tar:a.jpg", mode="L").mode == "L"


def test_a_bomb_is_stopped_from_its_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(30000, 30000))  # 9e8 px
    for call in (image_size, decode_image):
        with pytest.raises(BadImage, match="decompression bomb") as err:
            call(path)
        assert err.value.reason == "decompression_bomb" and err.value.path == str(path)
    with max_pixels_set(2_000):
        with pytest.raises(BadImage, match=r"64x48 px > max_pixels 2000"):
            decode_image(jpeg())
    past_twice = pytest.raises(BadImage, match="decompression bomb: Image size")
    with max_pixels_set(1_000), past_twice as err:
        image_size(jpeg())  # past twice the limit PIL itself refuses: the same BadImage
    assert err.value.path == "<image bytes>"
    assert decode_image(jpeg(), limit=4000).size == (64, 48)  # a caller's own limit


@pytest.mark.parametrize(
    "name, data, problem",
    [
        ("truncated.jpg", jpeg()[:400], "not a readable image"),
        ("empty.jpg", b"", "not a readable image"),
        ("text.jpg", b"hello, not an image", "not a readable image"),
        ("ps.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not a readable image"),
    ],
)
def test_damaged_or_foreign_files_are_bad_images(tmp_path, name, data, problem):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(BadImage, match=problem) as err:
        decode_image(path)
    assert err.value.reason == "undecodable"
    assert isinstance(err.value, BadSample)  # follows on_bad_sample wherever a policy applies


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(BadImage, match="image not found") as err:
        decode_image(tmp_path / "gone.jpg")
    assert err.value.reason == "missing"
