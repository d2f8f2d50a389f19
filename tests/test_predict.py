"""`predict`: people's own images, preprocessed the way MNIST was made."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_ffn.errors import ImageError
from mnist_ffn.inference.images import preprocess, read_image, to_pil
from tests.helpers import assert_one_line_error, real_data_dir, run_cli


def blank(width, height, value=255):
    return torch.full((height, width), float(value))


def center_of_mass(frame):
    total = frame.sum()
    rows = (frame.sum(dim=1) * torch.arange(28)).sum() / total
    columns = (frame.sum(dim=0) * torch.arange(28)).sum() / total
    return float(rows), float(columns)


def ink_box(frame, threshold=60):
    rows, columns = torch.nonzero(frame > threshold, as_tuple=True)
    return int(rows.max() - rows.min() + 1), int(columns.max() - columns.min() + 1)


def test_dark_ink_on_paper_is_inverted_to_light_on_black():
    paper = blank(100, 100)
    paper[30:70, 45:55] = 0  # a black bar
    frame = preprocess(to_pil(paper))
    assert frame.shape == (28, 28)
    assert frame[0, 0] == 0 and frame.max() > 200


def test_light_on_dark_is_kept():
    dark = blank(100, 100, 0)
    dark[30:70, 45:55] = 255
    light = blank(100, 100)
    light[30:70, 45:55] = 0
    assert torch.allclose(preprocess(to_pil(dark)), preprocess(to_pil(light)), atol=1)


def test_the_digit_is_scaled_to_fit_20x20_keeping_its_aspect_ratio():
    paper = blank(300, 300)
    paper[20:280, 100:165] = 0  # 260 tall, 65 wide: 4 to 1
    height, width = ink_box(preprocess(to_pil(paper)))
    assert height == 20
    assert width == pytest.approx(5, abs=1)


def test_an_off_center_digit_is_centered_by_its_center_of_mass():
    paper = blank(400, 300)
    paper[10:60, 20:35] = 0  # far in the top-left corner
    rows, columns = center_of_mass(preprocess(to_pil(paper)))
    assert rows == pytest.approx(14, abs=0.6) and columns == pytest.approx(14, abs=0.6)


def test_a_transparent_drawing_canvas_counts_as_white_paper():
    canvas = Image.new("RGBA", (120, 120), (0, 0, 0, 0))  # transparent black, as drawing apps save
    canvas.paste((20, 20, 20, 255), (50, 20, 70, 100))
    frame = preprocess(canvas)
    assert frame[0, 0] == 0 and frame.max() > 200


def test_a_blank_image_is_refused():
    with pytest.raises(ImageError, match="blank"):
        preprocess(to_pil(blank(50, 50)))


def test_files_that_are_not_images(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a png")
    with pytest.raises(ImageError, match="not an image"):
        read_image(text)
    with pytest.raises(ImageError, match="no such image file"):
        read_image(tmp_path / "missing.png")


def test_predict_json_and_the_preprocessed_images(tiny_run, tmp_path):
    paper = blank(90, 60)
    paper[10:50, 30:40] = 0
    image = tmp_path / "mine.png"
    to_pil(paper).save(image)
    saved = tmp_path / "fed"
    result = run_cli("predict", tiny_run / "best.pt", image, image, "--json", "--save-preprocessed", saved)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["predictions"]) == 2
    top = report["predictions"][0]["top"]
    assert len(top) == 3 and [guess["probability"] for guess in top] == sorted(
        (guess["probability"] for guess in top), reverse=True
    )
    assert 0 < sum(guess["probability"] for guess in top) <= 1 + 1e-6
    assert {guess["class"] for guess in top} <= {str(digit) for digit in range(10)}
    with Image.open(saved / "mine-28x28.png") as fed:
        assert fed.size == (28, 28)


def test_predict_prints_a_table(tiny_run, tmp_path):
    image = tmp_path / "mine.png"
    paper = blank(60, 60)
    paper[10:50, 25:35] = 0
    to_pil(paper).save(image)
    result = run_cli("predict", tiny_run / "best.pt", image)
    assert result.returncode == 0, result.stderr
    assert "mine.png" in result.stdout and "%" in result.stdout


def test_predict_on_a_file_that_is_not_an_image(tiny_run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert_one_line_error(run_cli("predict", tiny_run / "best.pt", notes), 1, "notes.txt: not an image")


HESITATION = 0.2  # the network's two best classes for the original within this of each other: it hesitates


@pytest.mark.real_data
@pytest.mark.slow
def test_redrawing_a_digit_does_not_change_what_the_network_reads(default_run, tmp_path):
    """A test digit drawn at 200x200 dark on white, light on dark, and off-center: `predict` reads each of the
    three as the network reads the original 28x28 image, right or wrong (which digits a network gets wrong
    depends on the machine that trained it). Where the network hesitates over the original, its two best classes
    within HESITATION of each other, a redrawing may tip the balance: there the original's class stays among the
    redrawing's two best."""
    import mnist_ffn
    from mnist_ffn.data.idx import load_dataset

    raw = load_dataset(real_data_dir(), "mnist")
    count = 30
    network = mnist_ffn.load(default_run / "best.pt", device="cpu")
    original = network.probabilities(raw.test_images[:count].float()).topk(2, dim=1)
    images = []
    for index in range(count):
        pixels = raw.test_images[index].numpy()
        dark_on_white = Image.fromarray(255 - pixels).resize((200, 200), Image.Resampling.BICUBIC)
        light_on_dark = Image.fromarray(pixels).resize((200, 200), Image.Resampling.BICUBIC)
        off_center = Image.new("L", (480, 360), 255)
        off_center.paste(dark_on_white, (260, 20))
        for name, image in (("dark", dark_on_white), ("light", light_on_dark), ("offcenter", off_center)):
            path = tmp_path / f"{index}-{name}.png"
            image.save(path)
            images.append((index, path))
        # The preprocessing recovers the original 28x28 digit closely.
        recovered = preprocess(dark_on_white)
        assert (recovered - raw.test_images[index].float()).abs().mean() < 20
    result = run_cli("predict", default_run / "best.pt", *(path for _, path in images), "--json")
    assert result.returncode == 0, result.stderr
    changed = []
    for (index, path), row in zip(images, json.loads(result.stdout)["predictions"], strict=True):
        read = network.classes[int(original.indices[index, 0])]
        gap = float(original.values[index, 0] - original.values[index, 1])
        best_two = [guess["class"] for guess in row["top"][:2]]
        if best_two[0] != read and (gap >= HESITATION or read not in best_two):
            changed.append((path.name, f"original read as {read} (ahead by {gap:.2f})", f"redrawn: {best_two}"))
    assert not changed
    sure = int((original.values[:, 0] - original.values[:, 1] >= HESITATION).sum())
    assert sure >= count * 5 // 6, "a trained network is sure of most of these digits: the test checks something"


def test_a_16_bit_greyscale_digit_is_read_at_full_depth(tmp_path):
    import numpy

    pixels = numpy.full((100, 100), 60_000, dtype=numpy.uint16)  # light paper
    pixels[20:80, 45:55] = 9_000  # a dark grey stroke: above 255, so an 8-bit conversion would clip it to white
    path = tmp_path / "deep.png"
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode.startswith("I")
    frame = preprocess(read_image(path))
    assert frame.max() > 200 and frame[0, 0] == 0
    assert ink_box(frame)[0] == 20  # the stroke was found and scaled to MNIST's 20-pixel box


def test_an_image_too_large_to_decode_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (8_000, 6_000), 255).save(path)  # 48 megapixels, a small file
    with pytest.raises(ImageError, match="8000x6000 pixels is too large"):
        read_image(path)


def test_each_image_gets_its_row_and_a_bad_one_fails_only_itself(tiny_run, tmp_path, monkeypatch):
    good = tmp_path / "good.png"
    paper = blank(80, 80)
    paper[10:70, 35:45] = 0
    to_pil(paper).save(good)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    empty = tmp_path / "blank.png"
    to_pil(blank(50, 50)).save(empty)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    result = run_cli("predict", tiny_run / "best.pt", good, junk, empty, folder, tmp_path / "missing.png", "--json")
    assert_one_line_error(result, 1, "4 of 5 images could not be classified")
    rows = {Path(row["image"]).name: row for row in json.loads(result.stdout)["predictions"]}
    assert len(rows["good.png"]["top"]) == 3 and "error" not in rows["good.png"]
    assert "not an image Pillow can read" in rows["junk.png"]["error"]
    assert "blank" in rows["blank.png"]["error"]
    assert "is a folder" in rows["a-folder"]["error"]
    assert "no such image file" in rows["missing.png"]["error"]
    monkeypatch.chdir(tmp_path)  # names as a person types them: a long path is folded over lines in the table
    table = run_cli("predict", tiny_run / "best.pt", "good.png", "junk.png")
    assert table.returncode == 1 and "junk.png" in table.stdout and "error" in table.stdout


@pytest.mark.parametrize("kind", ["file", "folder-under-a-file"])
def test_save_preprocessed_where_no_folder_can_be(tiny_run, tmp_path, kind):
    image = tmp_path / "digit.png"
    paper = blank(80, 80)
    paper[10:70, 35:45] = 0
    to_pil(paper).save(image)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker if kind == "file" else blocker / "inside"
    result = run_cli("predict", tiny_run / "best.pt", image, "--save-preprocessed", target)
    assert_one_line_error(result, 1, f"--save-preprocessed {target}")
    assert blocker.read_text() == "x"
