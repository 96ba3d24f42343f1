"""Scanning, validating, splitting and loading MVTec-layout folders."""

from __future__ import annotations

import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from wood_anomaly.data.layout import (
    PREPARED_KEYS,
    CorruptImageError,
    DatasetError,
    DatasetNotFoundError,
    EmptyDatasetError,
    LayoutError,
    MissingMaskWarning,
    OrphanMaskError,
    load_image,
    load_mask,
    load_prepared_arrays,
    prepare_dataset,
    scan_dataset,
    select,
    split_train_val,
)


# ------------------------------------------------------------------------------------------- scan
def test_scan_valid_tree(make_tree):
    root = make_tree(n_train=5, n_test_good=3, defects={"knot": 2, "crack": 2})
    # noise that must be ignored: hidden files, non-image files, an upper-case suffix counts
    (root / "train" / "good" / ".DS_Store").write_bytes(b"x")
    (root / "train" / "good" / "MANIFEST.md").write_text("notes")
    (root / "test" / "crack" / "._000.png").write_bytes(b"junk")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "good" / "10.PNG", format="PNG")

    df = scan_dataset(root)
    assert {"path", "label", "defect_type", "mask_path", "source_split"} <= set(df.columns)
    assert len(df) == 6 + 3 + 4
    assert (df.source_split == "train").sum() == 6
    train_names = [Path(p).name for p in df.path[df.source_split == "train"]]
    assert train_names == ["0.png", "1.png", "2.png", "3.png", "4.png", "10.PNG"]  # natural order
    test = df[df.source_split == "test"]
    assert list(test.defect_type) == ["good"] * 3 + ["crack"] * 2 + ["knot"] * 2
    assert list(test.label) == [0] * 3 + [1] * 4
    defects = df[df.label == 1]
    assert all(Path(m).name == f"{Path(p).stem}_mask.png" for p, m in zip(defects.path, defects.mask_path, strict=True))
    assert (df.mask_path[df.label == 0] == "").all()
    assert df.has_mask.all()
    # deterministic
    assert scan_dataset(root).equals(df)


def test_scan_accepts_plain_stem_mask_name(make_tree, imgio):
    root = make_tree(defects={"crack": 1}, masks=False)
    imgio.write_mask(root / "ground_truth" / "crack" / "000.png")
    df = scan_dataset(root)
    assert Path(df.mask_path[df.label == 1].item()).name == "000.png"


def test_mask_name_preference_and_duplicates(make_tree, imgio):
    root = make_tree(defects={"crack": 1})
    imgio.write_mask(root / "ground_truth" / "crack" / "000.png", box=(0, 0, 2, 2))
    df = scan_dataset(root)  # both '000_mask.png' and '000.png': the MVTec name wins
    assert Path(df.mask_path[df.label == 1].item()).name == "000_mask.png"
    imgio.write_mask(root / "ground_truth" / "crack" / "000.bmp")
    with pytest.raises(LayoutError, match="two masks"):
        scan_dataset(root)
    (root / "ground_truth" / "crack" / "000.bmp").unlink()
    imgio.write_rgb(root / "test" / "crack" / "000.jpg")  # same stem as 000.png
    with pytest.raises(LayoutError, match="share the stem"):
        scan_dataset(root)


@pytest.mark.parametrize("make_file", [False, True])
def test_missing_root_or_not_a_directory(tmp_path, make_file):
    target = tmp_path / "nowhere"
    if make_file:
        target.write_text("x")
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        scan_dataset(target)


def test_wrong_layout_names_expected_folder(tmp_path, imgio):
    imgio.write_rgb(tmp_path / "images" / "a.png")  # a flat folder of images, not MVTec
    with pytest.raises(LayoutError, match=r"wrong layout: expected .*train/good"):
        scan_dataset(tmp_path)


def test_empty_train_good(make_tree):
    root = make_tree(n_train=0)
    (root / "train" / "good").mkdir(parents=True)
    (root / "train" / "good" / "MANIFEST.md").write_text("only notes here")
    with pytest.raises(EmptyDatasetError, match="train/good"):
        scan_dataset(root)


def test_no_test_folder(make_tree):
    root = make_tree()
    shutil.rmtree(root / "test")
    shutil.rmtree(root / "ground_truth")
    with pytest.raises(LayoutError, match="test"):
        scan_dataset(root)


def test_test_folder_without_images(make_tree):
    root = make_tree(n_test_good=0, defects={}, masks=False)
    (root / "test" / "good").mkdir(parents=True)
    (root / "test" / "good" / "readme.txt").write_text("x")
    with pytest.raises(EmptyDatasetError, match="no test images"):
        scan_dataset(root)


def test_mask_without_image(make_tree, imgio):
    root = make_tree(defects={"crack": 2})
    orphan = imgio.write_mask(root / "ground_truth" / "crack" / "999_mask.png")
    with pytest.raises(OrphanMaskError, match="mask without image: .*999_mask.png"):
        scan_dataset(root)
    orphan.unlink()
    # a mask folder for a defect type with no test folder at all
    imgio.write_mask(root / "ground_truth" / "stain" / "000_mask.png")
    with pytest.raises(OrphanMaskError, match=r"stain.000_mask.png"):
        scan_dataset(root)


def test_errors_are_value_errors(tmp_path):
    with pytest.raises(ValueError):
        scan_dataset(tmp_path / "missing")
    assert issubclass(CorruptImageError, DatasetError)


def test_defect_without_mask_warns_and_is_left_out_of_pixel_ground_truth(make_tree):
    root = make_tree(defects={"crack": 2})
    (root / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.warns(MissingMaskWarning, match=r"crack.001.png"):
        df = scan_dataset(root)
    row = df[df.path.str.endswith("001.png") & (df.label == 1)].iloc[0]
    assert row.mask_path == "" and not row.has_mask
    arrays = load_prepared_arrays(split_train_val(df), 32, progress=False)
    i = int(np.flatnonzero(arrays["path"] == row.path)[0])
    assert not arrays["has_mask"][i] and arrays["masks"][i].sum() == 0
    # the other defect image keeps its mask; good images count as known all-zero ground truth
    assert arrays["has_mask"].sum() == len(df) - 1
    assert arrays["masks"][arrays["label"] == 1].sum() > 0


# ------------------------------------------------------------------------------------------- split
def test_split_fraction_and_determinism(make_tree):
    df = scan_dataset(make_tree(n_train=20, n_test_good=2, defects={"knot": 1}))
    a = split_train_val(df, 0.1, seed=3)
    b = split_train_val(df, 0.1, seed=3)
    assert a.split.tolist() == b.split.tolist()
    assert (a.split == "val").sum() == 2 and (a.split == "train").sum() == 18
    assert set(a.split[a.source_split == "test"]) == {"test"}
    assert set(a.split[a.source_split == "train"]) == {"train", "val"}
    assert "split" not in df.columns  # input untouched
    # other seeds pick other validation images (20 choose 2: these five cannot all coincide)
    picks = {tuple(split_train_val(df, 0.1, seed=s).split) for s in range(5)}
    assert len(picks) > 1
    assert (split_train_val(df, 0.5, seed=0).split == "val").sum() == 10


def test_split_small_sets_keep_one_each(make_tree):
    df = scan_dataset(make_tree(n_train=2))
    s = split_train_val(df, 0.01)
    assert (s.split == "val").sum() == 1 and (s.split == "train").sum() == 1
    s = split_train_val(df, 0.99)
    assert (s.split == "val").sum() == 1 and (s.split == "train").sum() == 1
    with pytest.raises(EmptyDatasetError):
        split_train_val(scan_dataset(make_tree(name="one", n_train=1)))
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="val_fraction"):
            split_train_val(df, bad)


# ------------------------------------------------------------------------------------------- images
def test_load_gray_rgba_palette(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png", None)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out == gray[..., None]).all()

    rgba = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: colour must still come through, alpha dropped
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert (load_image(tmp_path / "a.png") == rgba[..., :3]).all()

    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).quantize(colors=16)
    pal.save(tmp_path / "p.png")
    assert (load_image(tmp_path / "p.png") == np.asarray(pal.convert("RGB"))).all()

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    cmyk = load_image(tmp_path / "c.jpg", 16)
    assert cmyk.shape == (16, 16, 3)


def test_load_16bit_and_float_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(tmp_path / "d16.png")
    out = load_image(tmp_path / "d16.png")
    assert out.shape == (4, 4, 3)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()

    f = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32).repeat(4, axis=0)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    assert load_image(tmp_path / "f.tif")[0, :, 1].tolist() == [0, 64, 128, 255]


def test_resize_to_requested_size(tmp_path, imgio):
    imgio.write_rgb(tmp_path / "x.png", size=48)
    assert load_image(tmp_path / "x.png", 32).shape == (32, 32, 3)
    flat = np.full((40, 20, 3), 77, np.uint8)  # non-square, constant: bilinear keeps the value
    Image.fromarray(flat).save(tmp_path / "flat.png")
    out = load_image(tmp_path / "flat.png", 24)
    assert out.shape == (24, 24, 3) and (out == 77).all()


def test_corrupt_and_truncated_files_name_the_file(tmp_path, imgio, monkeypatch):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    with pytest.raises(CorruptImageError, match="junk.png"):
        load_image(junk, 32)
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    with pytest.raises(CorruptImageError, match="text.jpg"):
        load_image(text, 32)

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    # even when another library switched Pillow to tolerate truncation
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(CorruptImageError, match="trunc.jpg"):
        load_image(trunc, 32)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
    with pytest.raises(CorruptImageError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(CorruptImageError, match="junk.png"):
        load_mask(junk, 32)


def test_corrupt_image_in_dataset_fails_loading_with_its_name(make_tree):
    root = make_tree()
    bad = root / "test" / "good" / "1.png"
    bad.write_bytes(bad.read_bytes()[:60])
    df = split_train_val(scan_dataset(root))
    with pytest.raises(CorruptImageError, match=r"good.1\.png"):
        load_prepared_arrays(df, 32, progress=False)


def test_mask_of_other_size_resized_nearest(tmp_path, imgio):
    big = np.zeros((64, 64), np.uint8)
    big[8:24, 16:48] = 255
    big[40:42, 40:42] = 200  # a small bright gray block: nearest keeps values binary
    Image.fromarray(big, mode="L").save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png", 32)
    assert m.shape == (32, 32) and m.dtype == np.uint8
    assert set(np.unique(m)) <= {0, 1}
    expected = np.zeros((32, 32), np.uint8)
    expected[4:12, 8:24] = 1
    expected[20, 20] = 1
    assert (m == expected).all()
    # gray levels threshold at > 127; RGB masks are converted to gray first
    Image.fromarray(np.array([[127, 128]], np.uint8), mode="L").save(tmp_path / "t.png")
    assert load_mask(tmp_path / "t.png").tolist() == [[0, 1]]
    Image.fromarray(np.full((4, 4, 3), 255, np.uint8)).save(tmp_path / "rgb.png")
    assert load_mask(tmp_path / "rgb.png", 8).sum() == 64


def test_prepared_arrays_contract_and_npz_roundtrip(make_tree, tmp_path):
    root = make_tree(n_train=10, size=40)
    manifest, arrays = prepare_dataset(root, image_size=32, val_fraction=0.2, seed=0, progress=False)
    assert set(arrays) == set(PREPARED_KEYS)
    n = len(manifest)
    assert arrays["images"].shape == (n, 32, 32, 3) and arrays["images"].dtype == np.uint8
    assert arrays["masks"].shape == (n, 32, 32) and arrays["masks"].dtype == np.uint8
    assert arrays["has_mask"].dtype == bool and arrays["label"].dtype.kind == "i"
    for key in ("split", "defect_type", "path"):
        assert arrays[key].dtype.kind == "U", key
    assert arrays["split"].tolist() == manifest.split.tolist()
    assert (arrays["split"] == "val").sum() == 2
    assert arrays["masks"][arrays["label"] == 0].sum() == 0
    assert (arrays["masks"][arrays["label"] == 1].reshape(4, -1).sum(1) > 0).all()
    # the image really is the file, resized
    assert (arrays["images"][0] == load_image(manifest.path[0], 32)).all()
    np.savez(tmp_path / "p.npz", **arrays)
    with np.load(tmp_path / "p.npz", allow_pickle=False) as z:
        assert all((z[k] == arrays[k]).all() for k in PREPARED_KEYS)
    train = select(arrays, "train")
    assert len(train["images"]) == 8 and set(train["split"]) == {"train"}


def test_manifest_survives_csv_roundtrip(make_tree, tmp_path):
    """Kedro stores the manifest as CSV: empty mask paths come back as NaN and must still work."""
    import pandas as pd

    manifest, arrays = prepare_dataset(make_tree(), image_size=32, progress=False)
    manifest.to_csv(tmp_path / "m.csv", index=False)
    back = pd.read_csv(tmp_path / "m.csv")
    again = load_prepared_arrays(back, 32, progress=False)
    for key in PREPARED_KEYS:
        assert (again[key] == arrays[key]).all(), key


def test_prepared_arrays_need_split_column(make_tree):
    df = scan_dataset(make_tree())
    with pytest.raises(ValueError, match="split"):
        load_prepared_arrays(df, 32, progress=False)


def test_valid_tree_scans_without_warnings(make_tree):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scan_dataset(make_tree())


# ------------------------------------------------------------------------------------------- real
@pytest.mark.real_data
def test_real_dataset_counts(real_data):
    """`real_data` (tests/conftest.py) skips when ../shared/datasets/vsb_wood_esogu is absent."""
    df = scan_dataset(real_data)
    assert (df.source_split == "train").sum() == 70
    assert ((df.source_split == "test") & (df.label == 0)).sum() == 70
    assert (df.label == 1).sum() == 71
    assert (df.mask_path != "").sum() == 71
    assert set(df.defect_type) == {"good", "defect"}
    defect = df[df.label == 1].iloc[0]
    m = load_mask(defect.mask_path, 64)
    assert 0 < m.mean() < 0.5
    img = load_image(defect.path, 64)
    assert img.shape == (64, 64, 3) and img.std() > 1
