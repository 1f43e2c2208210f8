"""COCO and VOC readers: letterboxed boxes cover what was drawn, bad annotations are reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffisp.data import DetectionDataset, load_coco, load_voc
from diffisp.data.boxes import PAD_VALUE, letterbox_geometry
from diffisp.data.detection import seeded_split
from diffisp.errors import ConfigError, DataError

RED = (230, 20, 20)
BLUE = (20, 20, 230)
GREY = (60, 60, 60)


def draw(path: Path, width: int, height: int, rects=(), fmt: str = "PNG") -> None:
    """An image of ``width x height`` with filled rectangles ``(x0, y0, x1, y1, colour)``,
    pixel-edge coordinates (x1, y1 exclusive)."""
    pixels = np.full((height, width, 3), GREY, np.uint8)
    for x0, y0, x1, y1, colour in rects:
        pixels[y0:y1, x0:x1] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def write_coco(path: Path, images, annotations, categories=None) -> Path:
    categories = categories or [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    data = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(data))
    return path


def ann(ann_id: int, image_id: int, bbox, category: int = 1, **extra) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": bbox, **extra}


@pytest.fixture
def coco(tmp_path: Path):
    """A COCO folder of 3 images (one 120x60 with a red and a blue rectangle), split field set."""
    images_dir = tmp_path / "images"
    draw(images_dir / "wide.png", 120, 60, [(30, 10, 70, 40, RED), (90, 35, 110, 55, BLUE)])
    draw(images_dir / "sub" / "tall.png", 40, 80, [(5, 5, 25, 70, BLUE)])
    draw(images_dir / "empty.png", 50, 50)
    images = [
        {"id": 10, "file_name": "wide.png", "width": 120, "height": 60, "split": "train"},
        {"id": 11, "file_name": "sub/tall.png", "width": 40, "height": 80, "split": "train"},
        {"id": 12, "file_name": "empty.png", "split": "test"},
    ]
    annotations = [
        ann(1, 10, [30, 10, 40, 30], 1),
        ann(2, 10, [90, 35, 20, 20], 2),
        ann(3, 11, [5, 5, 20, 65], 2),
    ]

    def make(images=images, annotations=annotations, **kwargs) -> Path:
        return write_coco(tmp_path / "instances.json", images, annotations, **kwargs)

    return make, images_dir


def test_letterboxed_box_still_encloses_the_drawn_rectangle(coco):
    make, images_dir = coco
    ds = load_coco(make(), images_dir, image_size=48)
    assert isinstance(ds, DetectionDataset)
    assert (ds.num_train, ds.num_test, ds.max_objects) == (2, 1, 2)
    image, boxes, labels = ds.train_images[0], ds.train_boxes[0], ds.train_labels[0]
    # 120x60 -> 48x24, centred: 12 rows of padding above, scale 0.4.
    assert letterbox_geometry(120, 60, 48) == (48, 24, 0, 12)
    np.testing.assert_allclose(boxes[0], [12, 16, 28, 28], atol=1e-5)
    np.testing.assert_allclose(boxes[1], [36, 26, 44, 34], atol=1e-5)
    assert labels.tolist() == [0, 1]
    np.testing.assert_array_equal(image[:12], PAD_VALUE)
    np.testing.assert_array_equal(image[36:], PAD_VALUE)
    for (x0, y0, x1, y1), channel in zip(boxes, (0, 2), strict=True):
        # Every pixel that is mostly the rectangle's colour has its centre inside the box ...
        other = 2 - channel
        coloured = (image[..., channel] - image[..., other]) > 0.5
        rows, cols = np.nonzero(coloured)
        assert coloured.any()
        assert np.all((cols + 0.5 > x0) & (cols + 0.5 < x1) & (rows + 0.5 > y0) & (rows + 0.5 < y1))
        # ... and the box's interior, one pixel in from its edges, is all that colour.
        inner = coloured[int(y0) + 1 : int(y1) - 1, int(x0) + 1 : int(x1) - 1]
        assert inner.all()
    info = ds.train_info[0]
    assert (info.file, info.width, info.height) == ("wide.png", 120, 60)
    np.testing.assert_allclose(info.to_original(boxes[:2]), [[30, 10, 70, 40], [90, 35, 110, 55]])


def test_split_field_order_files_and_padding(coco):
    make, images_dir = coco
    ds = load_coco(make(), images_dir, image_size=32)
    assert [i.file for i in ds.train_info] == ["wide.png", "sub/tall.png"]
    assert [i.file for i in ds.test_info] == ["empty.png"]
    tall = ds.train_info[1]  # 40x80 -> 16x32, centred: 8 columns of padding on the left
    assert (tall.offset_x, tall.offset_y, tall.scale_x, tall.scale_y) == (8, 0, 0.4, 0.4)
    np.testing.assert_allclose(ds.train_boxes[1, 0], [10, 2, 18, 28], atol=1e-5)
    assert ds.train_labels[1].tolist() == [1, -1]  # padded slot
    np.testing.assert_array_equal(ds.train_boxes[1, 1], 0)
    assert ds.test_labels.tolist() == [[-1, -1]]  # an image without objects is kept
    assert ds.class_names == ("red", "blue")
    assert ds.skipped == {"crowd": 0, "outside_image": 0, "zero_area": 0} and ds.clipped == 0
    assert not ds.train_images.flags.writeable
    assert load_coco(make(), images_dir, image_size=32, max_objects=5).max_objects == 5
    with pytest.raises(DataError, match="max_objects=1"):
        load_coco(make(), images_dir, image_size=32, max_objects=1)


def test_category_ids_become_contiguous_in_id_order(coco):
    make, images_dir = coco
    categories = [{"id": 9, "name": "red"}, {"id": 4, "name": "blue"}]
    annotations = [ann(1, 10, [30, 10, 40, 30], 9), ann(2, 11, [5, 5, 20, 65], 4)]
    ds = load_coco(make(annotations=annotations, categories=categories), images_dir, image_size=32)
    assert ds.class_names == ("blue", "red")
    assert ds.train_labels[:, 0].tolist() == [1, 0]


def test_bad_boxes_are_clipped_or_skipped_and_counted(coco):
    make, images_dir = coco
    annotations = [
        ann(1, 10, [100, 40, 50, 50]),  # partly outside: clipped to (100, 40, 120, 60)
        ann(2, 10, [130, 10, 5, 5]),  # entirely outside
        ann(3, 10, [-20, 0, 20, 10]),  # touches the left edge only: outside
        ann(4, 10, [10, 10, 0, 5]),  # zero width
        ann(5, 10, [10, 10, 5, -3]),  # negative height
        ann(6, 11, [0, 0, 40, 80], iscrowd=1),  # crowd region
    ]
    ds = load_coco(make(annotations=annotations), images_dir, image_size=120)
    assert ds.skipped == {"crowd": 1, "outside_image": 2, "zero_area": 2}
    assert ds.clipped == 1
    assert ds.max_objects == 1
    # 120x60 at 120: scale 1, 30 rows of padding above.
    np.testing.assert_allclose(ds.train_boxes[0, 0], [100, 70, 120, 90])
    assert ds.train_labels[1].tolist() == [-1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"annotations": [ann(17, 10, [1, 1, 5, 5], 3)]},
            r"instances.json: annotation id 17 .*category_id 3",
        ),
        ({"annotations": [ann(18, 99, [1, 1, 5, 5])]}, r"annotation id 18 refers to image id 99"),
        ({"annotations": [ann(19, 10, [1, 1, 5])]}, r"annotation id 19 has bbox"),
        ({"annotations": [ann(20, 10, [1, float("nan"), 5, 5])]}, r"annotation id 20 has bbox"),
        ({"annotations": [ann(21, 10, [1, "2", 5, 5])]}, r"annotation id 21 has bbox"),
    ],
)
def test_bad_annotations_name_the_file_and_annotation(coco, change, message):
    make, images_dir = coco
    with pytest.raises(DataError, match=message):
        load_coco(make(**change), images_dir, image_size=32)


def test_missing_image_mismatched_size_and_escaping_names(coco):
    make, images_dir = coco
    (images_dir / "empty.png").unlink()
    with pytest.raises(DataError, match=r"image file .*empty.png does not exist"):
        load_coco(make(), images_dir, image_size=32)
    draw(images_dir / "empty.png", 50, 50)
    images = [
        {"id": 10, "file_name": "wide.png", "width": 60, "height": 120},
        {"id": 11, "file_name": "empty.png"},
    ]
    with pytest.raises(DataError, match=r"wide.png is 120x60 but its annotation says 60x120"):
        load_coco(make(images=images, annotations=[]), images_dir, image_size=32)
    images = [{"id": 1, "file_name": "../instances.json"}, {"id": 2, "file_name": "empty.png"}]
    with pytest.raises(DataError, match="must be a relative path inside"):
        load_coco(make(images=images, annotations=[]), images_dir, image_size=32)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"images": [}', r"cannot parse COCO annotation file .*instances.json: Expecting value"),
        ("[1, 2]", r"instances.json: a COCO annotation file is a JSON object"),
        ('{"images": [], "annotations": []}', r"'categories' is missing"),
    ],
)
def test_malformed_json_names_the_file_and_the_parser_message(coco, text, message):
    make, images_dir = coco
    path = make()
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_coco(path, images_dir, image_size=32)


def test_seeded_split_is_deterministic_per_seed(tmp_path):
    images_dir = tmp_path / "images"
    images = []
    for i in range(10):
        draw(images_dir / f"{i}.png", 16, 16)
        images.append({"id": i, "file_name": f"{i}.png"})
    path = write_coco(tmp_path / "a.json", images, [])

    def test_files(seed: int) -> list[str]:
        ds = load_coco(path, images_dir, image_size=16, seed=seed, test_fraction=0.2)
        assert ds.num_train == 8
        return [i.file for i in ds.test_info]

    assert test_files(0) == test_files(0)
    assert len({tuple(test_files(s)) for s in range(4)}) > 1
    train, test = seeded_split(10, 0.2, seed=3)
    assert sorted([*train, *test]) == list(range(10)) and len(test) == 2
    with pytest.raises(ConfigError, match="test_fraction"):
        seeded_split(10, 1.5, seed=0)
    with pytest.raises(DataError, match="at least 2 images"):
        seeded_split(1, 0.2, seed=0)


def test_mixed_split_fields_and_a_separate_test_file(coco, tmp_path):
    make, images_dir = coco
    images = [
        {"id": 10, "file_name": "wide.png", "split": "train"},
        {"id": 12, "file_name": "empty.png"},
    ]
    with pytest.raises(DataError, match="some images have a 'split' field"):
        load_coco(make(images=images, annotations=[]), images_dir, image_size=32)
    train = make(
        images=[{"id": 10, "file_name": "wide.png"}], annotations=[ann(1, 10, [30, 10, 40, 30])]
    )
    test = write_coco(tmp_path / "test.json", [{"id": 1, "file_name": "empty.png"}], [])
    ds = load_coco(train, images_dir, image_size=32, test_annotations=test)
    assert [i.file for i in ds.test_info] == ["empty.png"] and ds.num_train == 1
    other = write_coco(tmp_path / "other.json", [], [], categories=[{"id": 1, "name": "x"}])
    with pytest.raises(DataError, match="different categories"):
        load_coco(train, images_dir, image_size=32, test_annotations=other)


# -- Pascal VOC ----------------------------------------------------------------------------------


def voc_xml(filename: str, objects, size=(120, 60)) -> str:
    parts = [
        f"<annotation><folder>VOC</folder><filename>{filename}</filename>",
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>",
    ]
    for name, (xmin, ymin, xmax, ymax), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox>"
            f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
            "</bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """A VOC folder of 4 JPEGs; image a has a red rectangle at pixels 30..69 x 10..39."""
    root = tmp_path / "VOC"
    (root / "Annotations").mkdir(parents=True)
    for stem in "abcd":
        draw(root / "JPEGImages" / f"{stem}.jpg", 120, 60, [(30, 10, 70, 40, RED)], fmt="JPEG")
        objects = [("car", (31, 11, 70, 40), False)]  # 1-based inclusive indices
        if stem == "b":
            objects.append(("person", (5, 5, 20, 20), True))
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", objects))
    return root


def test_voc_boxes_follow_the_one_based_inclusive_convention(voc):
    ds = load_voc(voc, image_size=60, seed=0)
    assert ds.class_names == ("car", "person")
    assert ds.num_train + ds.num_test == 4
    info = (*ds.train_info, *ds.test_info)
    images = np.concatenate([ds.train_images, ds.test_images])
    boxes = np.concatenate([ds.train_boxes, ds.test_boxes])
    index = [i.file for i in info].index("JPEGImages/a.jpg")
    # 120x60 -> 60x30 at scale 0.5 with 15 rows of padding: pixels 30..69 x 10..39 -> box below.
    np.testing.assert_allclose(boxes[index, 0], [15, 20, 35, 35], atol=1e-5)
    np.testing.assert_allclose(info[index].to_original(boxes[index, :1]), [[30, 10, 70, 40]])
    red = (images[index, ..., 0] - images[index, ..., 2]) > 0.5
    rows, cols = np.nonzero(red)
    assert cols.min() >= 15 and cols.max() < 35 and rows.min() >= 20 and rows.max() < 35
    assert red[21:34, 16:34].all()


def test_voc_difficult_objects_are_kept_and_flagged(voc):
    ds = load_voc(voc, image_size=32, split="seeded", seed=0)
    files = [i.file for i in (*ds.train_info, *ds.test_info)]
    labels = np.concatenate([ds.train_labels, ds.test_labels])
    difficult = np.concatenate([ds.train_difficult, ds.test_difficult])
    b = files.index("JPEGImages/b.jpg")
    assert labels[b].tolist() == [0, 1] and difficult[b].tolist() == [False, True]
    assert difficult.sum() == 1


def test_voc_image_sets_give_the_split(voc):
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("a\nc\n")
    (main / "val.txt").write_text("d\n")
    ds = load_voc(voc, image_size=32)
    assert [i.file for i in ds.train_info] == ["JPEGImages/a.jpg", "JPEGImages/c.jpg"]
    assert [i.file for i in ds.test_info] == ["JPEGImages/d.jpg"]
    (main / "test.txt").write_text("b\n")
    ds = load_voc(voc, image_size=32)  # test.txt: train = train + val
    assert [i.file for i in ds.test_info] == ["JPEGImages/b.jpg"] and ds.num_train == 3
    (main / "test.txt").write_text("a\n")
    with pytest.raises(DataError, match="'a' is listed for both train and test"):
        load_voc(voc, image_size=32)
    (main / "test.txt").write_text("zz\n")
    with pytest.raises(DataError, match=r"Annotations/zz.xml is missing"):
        load_voc(voc, image_size=32)


def test_voc_class_names_given_and_unknown(voc):
    ds = load_voc(voc, image_size=32, class_names=["person", "car", "dog"])
    assert ds.class_names == ("person", "car", "dog")
    with pytest.raises(DataError, match=r"b.xml: object #1 has class 'person', not in"):
        load_voc(voc, image_size=32, class_names=["car"])


def test_voc_bad_boxes_are_clipped_or_skipped(voc):
    objects = [
        ("car", (100, 50, 150, 80), False),  # partly outside: clipped
        ("car", (200, 10, 220, 20), False),  # outside
        ("car", (10, 10, 9, 20), False),  # xmax < xmin - 1: negative width
    ]
    (voc / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", objects))
    ds = load_voc(voc, image_size=32)
    assert ds.skipped == {"outside_image": 1, "zero_area": 1} and ds.clipped == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "<annotation><object></annotation>",
            r"cannot parse VOC annotation .*a.xml: mismatched tag",
        ),
        ('<!DOCTYPE x [<!ENTITY e "e">]><annotation/>', r"a.xml has a DTD or entity"),
        ("<other/>", r"a.xml: the root element is <other>"),
        (voc_xml("a.jpg", [("car", ("x", 1, 2, 3), False)]), r"a.xml: object #0 \(car\) lacks"),
        ("<annotation><object><name>car</name></object></annotation>", r"object #0 \(car\) lacks"),
        ("<annotation><object><bndbox/></object></annotation>", r"object #0 has no <name>"),
    ],
)
def test_voc_malformed_xml_names_the_file(voc, text, message):
    (voc / "Annotations" / "a.xml").write_text(text)
    with pytest.raises(DataError, match=message):
        load_voc(voc, image_size=32)


def test_voc_missing_image_and_size_mismatch(voc):
    (voc / "JPEGImages" / "c.jpg").unlink()
    with pytest.raises(DataError, match=r"the image of .*c.xml does not exist"):
        load_voc(voc, image_size=32)
    draw(voc / "JPEGImages" / "c.jpg", 60, 60, fmt="JPEG")
    with pytest.raises(DataError, match=r"c.jpg is 60x60 but its annotation says 120x60"):
        load_voc(voc, image_size=32)


def test_the_container_refuses_inconsistent_arrays(coco):
    make, images_dir = coco
    ds = load_coco(make(), images_dir, image_size=16)
    fields = {f: getattr(ds, f) for f in ds.__dataclass_fields__}
    boxes = np.array(ds.train_boxes)
    boxes[0, 0] = [5, 5, 4, 9]  # x1 < x0
    with pytest.raises(DataError, match="boxes must be non-empty"):
        DetectionDataset(**{**fields, "train_boxes": boxes})
    labels = np.array(ds.train_labels)
    labels[0, 0] = 2  # only 2 classes
    with pytest.raises(DataError, match=r"labels must lie in \[-1, 2\)"):
        DetectionDataset(**{**fields, "train_labels": labels})
    with pytest.raises(DataError, match="one info entry per image"):
        DetectionDataset(**{**fields, "test_info": ()})


# A DTD in any encoding: the check is the parser's, not a search of the raw bytes (issue 27).
_ENCODINGS = {
    "UTF-8": "utf-8",
    "UTF-16": "utf-16",  # with a byte-order mark
    "UTF-16LE": "utf-16-le",
    "UTF-16BE": "utf-16-be",
    "UTF-32": "utf-32",
    "UTF-32BE": "utf-32-be",
}
_ATTACKS = {
    "doctype": "<!DOCTYPE annotation>",
    "internal entity": '<!DOCTYPE annotation [<!ENTITY e "dog">]>',
    "xxe": '<!DOCTYPE annotation [<!ENTITY e SYSTEM "file:///etc/hostname">]>',
    "billion laughs": (
        '<!DOCTYPE annotation [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY e "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    ),
}


@pytest.mark.parametrize("encoding", _ENCODINGS)
@pytest.mark.parametrize("attack", _ATTACKS)
def test_voc_refuses_dtds_and_entities_in_every_encoding(voc, encoding, attack):
    body = voc_xml("a.jpg", [("&e;" if attack != "doctype" else "car", (31, 11, 70, 40), False)])
    text = f'<?xml version="1.0" encoding="{encoding}"?>\n{_ATTACKS[attack]}\n{body}'
    (voc / "Annotations" / "a.xml").write_bytes(text.encode(_ENCODINGS[encoding]))
    with pytest.raises(DataError, match=r"a.xml has a DTD or entity .*refused"):
        load_voc(voc, image_size=32)


@pytest.mark.parametrize("encoding", _ENCODINGS)
def test_voc_reads_plain_annotations_in_every_encoding(voc, encoding):
    body = voc_xml("a.jpg", [("dog", (31, 11, 70, 40), False)])
    text = f'<?xml version="1.0" encoding="{encoding}"?>\n{body}'
    (voc / "Annotations" / "a.xml").write_bytes(text.encode(_ENCODINGS[encoding]))
    assert load_voc(voc, image_size=32).class_names == ("car", "dog", "person")
