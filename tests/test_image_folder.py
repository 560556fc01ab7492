"""Image folders as users have them: class folders, synset-named files, a flat ILSVRC2012_val folder with a label
file; streamed batches equal to the materialized ones; clear errors; a cache keyed by the files' contents."""
import argparse
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from tsptq.data import datasets
from tsptq.cli.main import build_parser, resolve_data
from tsptq.errors import DataError
from tsptq.model.vit import ViTConfig

# Synsets 0, 1 and 999 of ImageNet-1k, so the 1000-class index (0, 1, 999) differs from the rank among those found.
SYNSETS = ("n01440764", "n01443537", "n15075141")
SIZES = ((40, 30), (30, 44), (48, 40))  # (width, height): upscaled, portrait, downscaled to 36 then cropped to 32
# Validation number of each image: not in class order, so the flat layout orders the images differently.
VAL_NUMBERS = ((5, 1, 9), (3, 7, 2), (8, 4, 6))


def small_cfg(num_classes: int = 10) -> ViTConfig:
    return ViTConfig(img_size=32, patch_size=8, num_classes=num_classes, embed_dim=16, depth=1, num_heads=2,
                     mlp_hidden=32)


def val_name(k: int) -> str:
    return f"ILSVRC2012_val_{k:08d}"


def pixels(seed: int, size) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def image_table():
    """{val number: (synset, uint8 pixels)}: 3 synsets x 3 images."""
    return {k: (s, pixels(k, SIZES[j])) for s, ks in zip(SYNSETS, VAL_NUMBERS) for j, k in enumerate(ks)}


def write_image(path, arr, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 0}))


def class_folders(root, fmt="JPEG", suffix=".JPEG"):
    for k, (s, arr) in image_table().items():
        write_image(root / s / f"{val_name(k)}{suffix}", arr, fmt)
    return root


def synset_named(root):
    for k, (s, arr) in image_table().items():
        write_image(root / f"{s}_{val_name(k)}.JPEG", arr)
    return root


def flat_val(root):
    for k, (_, arr) in image_table().items():
        write_image(root / f"{val_name(k)}.JPEG", arr)
    return root


def label_lines(sep=" ", suffix=".JPEG", label=lambda s: s):
    return "".join(f"{val_name(k)}{suffix}{sep}{label(s)}\n" for k, (s, _) in sorted(image_table().items()))


def by_image(images, cfg):
    """{val number: (label, model input)} of a set, whatever its order."""
    x = torch.cat(list(images.batches(cfg, 4)))
    return {int(f.rsplit("_", 1)[-1].split(".")[0]): (int(y), x[i]) for i, (f, y) in
            enumerate(zip(images.files, images.labels))}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TSPTQ_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("num_classes, expected", [(10, (0, 1, 2)), (1000, (0, 1, 999))])
def test_layouts_give_the_same_labels_and_inputs(tmp_path, num_classes, expected):
    cfg = small_cfg(num_classes)
    (tmp_path / "labels.txt").write_text(label_lines())
    sets = [datasets.FolderImageSet.open(class_folders(tmp_path / "val"), cfg),
            datasets.FolderImageSet.open(synset_named(tmp_path / "named"), cfg),
            datasets.FolderImageSet.open(flat_val(tmp_path / "flat"), cfg, tmp_path / "labels.txt")]
    assert [len(s) for s in sets] == [9, 9, 9]
    assert sets[2].files[0] == f"{val_name(1)}.JPEG" and sets[0].files[0] == f"{SYNSETS[0]}/{val_name(1)}.JPEG"
    ref = by_image(sets[0], cfg)
    assert {k: y for k, (y, _) in ref.items()} == {k: expected[SYNSETS.index(s)] for k, (s, _) in
                                                   image_table().items()}
    for other in sets[1:]:
        got = by_image(other, cfg)
        assert got.keys() == ref.keys()
        for k in ref:
            assert got[k][0] == ref[k][0] and torch.equal(got[k][1], ref[k][1])
    # The per-image preprocessing: bicubic shorter side to int(32 / 0.875) = 36, center crop 32, to_model_input.
    decoded = Image.open(tmp_path / "flat" / f"{val_name(5)}.JPEG").convert("RGB")  # 40x30
    expect = datasets.to_model_input(np.array(decoded.resize((48, 36), Image.BICUBIC).crop((8, 2, 40, 34)))[None], cfg)
    assert torch.equal(ref[5][1], expect[0])


def test_materialized_path_is_the_streamed_one(tmp_path):
    cfg = small_cfg()
    root = class_folders(tmp_path / "val")
    loaded = datasets.load_image_folder(root, cfg)
    streamed = datasets.FolderImageSet.open(root, cfg)
    assert isinstance(loaded, datasets.ImageSet) and loaded.images.shape == (9, 32, 32, 3)
    assert np.array_equal(loaded.labels, streamed.labels) and loaded.name == streamed.name == "val"
    for a, b in zip(loaded.batches(cfg, 4), streamed.batches(cfg, 4), strict=True):
        assert torch.equal(a, b)
    assert np.array_equal(datasets.load_image_folder(root, cfg, limit=4).images, loaded.images[:4])


def test_batches_of_a_slice_decode_only_that_slice(tmp_path, monkeypatch):
    cfg = small_cfg()
    streamed = datasets.FolderImageSet.open(class_folders(tmp_path / "val"), cfg)
    full = torch.cat(list(streamed.load().batches(cfg, 9)))
    decoded = []
    real = datasets.decode_image
    monkeypatch.setattr(datasets, "decode_image", lambda p, c: decoded.append(p.name) or real(p, c))
    for start, stop, bs in [(3, 8, 2), (0, None, 4), (7, None, 5), (5, 5, 2), (2, 3, 1)]:
        decoded.clear()
        got = list(streamed.batches(cfg, bs, start, stop))
        want = list(streamed.load().batches(cfg, bs, start, stop))
        assert [x.shape for x in got] == [x.shape for x in want]
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert torch.equal(torch.cat(got) if got else full[:0], full[start:stop])
        assert len(decoded) == len(range(9)[start:stop])  # cached load() decodes nothing; batches only the slice
    part = streamed.take(4, offset=2)
    assert part.files == streamed.files[2:6] and np.array_equal(part.labels, streamed.labels[2:6])
    assert torch.equal(torch.cat(list(part.batches(cfg, 3))), full[2:6])
    with pytest.raises(DataError, match="asked for 8 images from offset 2"):
        streamed.take(8, offset=2)


def test_balanced_and_pickle_carry_no_pixels(tmp_path):
    cfg = small_cfg()
    streamed = datasets.FolderImageSet.open(class_folders(tmp_path / "val"), cfg)
    loaded = streamed.load()
    b = streamed.balanced(4, seed=3)
    assert isinstance(b, datasets.FolderImageSet) and len(set(b.labels.tolist())) >= 2
    assert np.array_equal(b.load().images, loaded.balanced(4, seed=3).images)
    blob = pickle.dumps(streamed)
    assert len(blob) < 4000 < loaded.images.nbytes  # names and labels, not pixels
    again = pickle.loads(blob)
    assert all(torch.equal(a, c) for a, c in zip(again.batches(cfg, 4, 1), streamed.batches(cfg, 4, 1), strict=True))


@pytest.mark.parametrize("text", [
    label_lines(" "),
    label_lines(",", suffix=""),
    "file,label\n" + label_lines(",", suffix=".jpeg"),
    "# ground truth\n" + label_lines("\t", suffix=".JPEG").replace(val_name(0)[:4], "val/ILSV"),
    label_lines(" ", label=lambda s: {"n01440764": 0, "n01443537": 1, "n15075141": 999}[s]),
    "ImageId,PredictionString\n" + "".join(f"{val_name(k)},{s} 1 2 30 40 {s} 5 6 70 80\n"
                                            for k, (s, _) in image_table().items()),
], ids=["space", "comma-no-suffix", "header", "tab-paths-comment", "class-index", "kaggle"])
def test_label_file_formats(tmp_path, text):
    cfg = small_cfg(1000)
    (tmp_path / "labels.txt").write_text(text)
    got = datasets.FolderImageSet.open(flat_val(tmp_path / "flat"), cfg, tmp_path / "labels.txt")
    want = {k: (0, 1, 999)[SYNSETS.index(s)] for k, (s, _) in image_table().items()}
    assert {k: y for k, (y, _) in by_image(got, cfg).items()} == want


def test_devkit_ground_truth_is_refused(tmp_path):
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{k}\n" for k in (490, 361, 171)))
    with pytest.raises(DataError) as e:
        datasets.FolderImageSet.open(flat_val(tmp_path / "flat"), small_cfg(1000),
                                     tmp_path / "ILSVRC2012_validation_ground_truth.txt")
    msg = str(e.value)
    assert "devkit" in msg and "not the class index" in msg and "LOC_val_solution.csv" in msg and "\n" not in msg


@pytest.mark.parametrize("edit, message", [
    (lambda t: t + f"{val_name(42)}.JPEG n01440764\n", f"1 listed image\\(s\\) not found under .*, first {val_name(42)}"),
    (lambda t: "".join(t.splitlines(True)[2:]), f"2 image\\(s\\) not in the label file .*, first {val_name(1)}.JPEG"),
    (lambda t: t.replace("n15075141", "n99999999"), "3 image\\(s\\) with a synset that is not an ImageNet-1k class"),
    (lambda t: t.replace(" n01440764", " n01440764 extra"), "expected '<file name> <synset"),
    (lambda t: t + f"{val_name(1)} n01443537\n", "labelled both"),
])
def test_label_file_errors_name_the_first_file_and_the_count(tmp_path, edit, message):
    (tmp_path / "labels.txt").write_text(edit(label_lines()))
    with pytest.raises(DataError, match=message) as e:
        datasets.FolderImageSet.open(flat_val(tmp_path / "flat"), small_cfg(1000), tmp_path / "labels.txt")
    assert "\n" not in str(e.value)


def test_flat_folder_without_labels_says_to_give_them(tmp_path):
    with pytest.raises(DataError, match=f"9 image\\(s\\) without a synset .* first {val_name(1)}.JPEG.*--labels"):
        datasets.FolderImageSet.open(flat_val(tmp_path / "flat"), small_cfg())


def test_class_index_of_a_1000_class_model_is_the_shipped_imagenet1k_list(tmp_path):
    synsets = datasets.imagenet1k_synsets()
    assert len(synsets) == 1000 == len(set(synsets)) and list(synsets) == sorted(synsets)
    assert synsets[0] == "n01440764" and synsets[999] == "n15075141"
    write_image(tmp_path / "one" / "n01443537" / "a.JPEG", pixels(0, (40, 30)))
    assert datasets.FolderImageSet.open(tmp_path / "one", small_cfg(1000)).labels.tolist() == [1]
    assert datasets.FolderImageSet.open(tmp_path / "one", small_cfg(10)).labels.tolist() == [0]  # rank among found
    write_image(tmp_path / "one" / "n01440764" / "b.JPEG", pixels(1, (40, 30)))
    assert datasets.FolderImageSet.open(tmp_path / "one", small_cfg(1000)).labels.tolist() == [0, 1]
    write_image(tmp_path / "one" / "n99999999" / "c.JPEG", pixels(2, (40, 30)))
    with pytest.raises(DataError, match="1 image\\(s\\) with a synset that is not an ImageNet-1k class, first "
                                        "n99999999/c.JPEG"):
        datasets.FolderImageSet.open(tmp_path / "one", small_cfg(1000))
    assert datasets.FolderImageSet.open(tmp_path / "one", small_cfg(10)).labels.tolist() == [0, 1, 2]


def _decode_error(root, cfg):
    s = datasets.FolderImageSet.open(root, cfg)
    with pytest.raises(DataError) as streamed:
        list(s.batches(cfg, 4))
    with pytest.raises(DataError) as loaded:
        s.load()
    assert str(streamed.value) == str(loaded.value) and "\n" not in str(loaded.value)
    return str(loaded.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_image_is_a_one_line_error_naming_it(tmp_path, damage):
    root = class_folders(tmp_path / "val")
    bad = root / SYNSETS[1] / f"{val_name(7)}.JPEG"
    data = bad.read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a jpeg" * 50, "empty": b""}[damage])
    assert f"cannot decode image {bad}" in _decode_error(root, small_cfg())


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    import PIL.Image

    root = class_folders(tmp_path / "val")
    monkeypatch.setattr(datasets, "MAX_IMAGE_PIXELS", 1500)  # 40x30 = 1200 passes, 30x44 = 1320, 48x40 = 1920 not
    msg = _decode_error(root, small_cfg())
    assert f"{root / SYNSETS[0] / val_name(9)}.JPEG: 48x40 = 1,920 pixels is over the limit of 1,500" in msg
    # PIL's own check (its warning band too) when ours is off: a one-line DataError, not a warning or a crash.
    monkeypatch.setattr(datasets, "MAX_IMAGE_PIXELS", None)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # 1200 px: PIL warns; 1920 px: PIL raises
    assert "decompression bomb" in _decode_error(root, small_cfg())
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 600)
    assert "decompression bomb" in _decode_error(root, small_cfg())


def test_cache_follows_the_files_contents(tmp_path, monkeypatch):
    cfg = small_cfg()
    root = class_folders(tmp_path / "val", fmt="PNG", suffix=".png")  # uncompressed: same size whatever the pixels
    first = datasets.load_image_folder(root, cfg)
    assert len(list((tmp_path / "cache").glob("folder-*.npz"))) == 1
    real = datasets.decode_image

    def no_decoding(path, c):
        raise AssertionError(f"decoded {path} despite the cache")

    monkeypatch.setattr(datasets, "decode_image", no_decoding)
    assert np.array_equal(datasets.load_image_folder(root, cfg).images, first.images)  # served from the cache
    path = root / SYNSETS[2] / f"{val_name(6)}.png"
    st = os.stat(path)
    write_image(path, 255 - pixels(6, SIZES[2]), "PNG")  # other pixels, same size in bytes
    assert os.stat(path).st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    monkeypatch.setattr(datasets, "decode_image", real)
    second = datasets.load_image_folder(root, cfg)
    fresh = datasets.FolderImageSet.open(root, cfg).load(cache=False)
    assert np.array_equal(second.images, fresh.images) and not np.array_equal(second.images, first.images)
    i = datasets.FolderImageSet.open(root, cfg).files.index(f"{SYNSETS[2]}/{val_name(6)}.png")
    assert not np.array_equal(second.images[i], first.images[i])
    assert np.array_equal(np.delete(second.images, i, 0), np.delete(first.images, i, 0))


def test_resolve_data_streams_the_evaluation_folder(tmp_path):
    cfg = small_cfg(1000)
    (tmp_path / "labels.csv").write_text(label_lines(","))
    root = flat_val(tmp_path / "flat")
    calib, test, labelled = resolve_data(None, cfg, "imagenet", 2, None, str(root), labels=str(tmp_path / "labels.csv"),
                                         stream=True)
    assert isinstance(calib, datasets.ImageSet) and isinstance(test, datasets.FolderImageSet) and labelled
    assert len(calib) == 2 and len(test) == 7 and test.files[0] == f"{val_name(3)}.JPEG"  # first 2 kept out
    _, test5, _ = resolve_data(None, cfg, "imagenet", 2, 5, str(root), labels=str(tmp_path / "labels.csv"), stream=True)
    assert test5.files == test.files[:5]
    _, mat, _ = resolve_data(None, cfg, "imagenet", 2, None, str(root), labels=str(tmp_path / "labels.csv"))
    assert isinstance(mat, datasets.ImageSet)  # the default: materialized (verify, deploy, export)
    assert torch.equal(torch.cat(list(mat.batches(cfg, 3))), torch.cat(list(test.batches(cfg, 3))))
    assert not resolve_data(None, small_cfg(10), "imagenet", 2, None, str(class_folders(tmp_path / "val")))[2]
    with pytest.raises(DataError, match="--labels and --calib-folder are for --data imagenet"):
        resolve_data(None, cfg, "bundled", 2, None, None, labels=str(tmp_path / "labels.csv"))


def test_calibration_folder_and_one_label_file_for_both(tmp_path):
    cfg = small_cfg(1000)
    (tmp_path / "labels.txt").write_text(label_lines())
    table = image_table()
    for k in (1, 2, 3, 4):
        write_image(tmp_path / "calib" / f"{val_name(k)}.JPEG", table[k][1])
    for k in (5, 6, 7, 8, 9):
        write_image(tmp_path / "eval" / f"{val_name(k)}.JPEG", table[k][1])
    labels = str(tmp_path / "labels.txt")
    calib, test, _ = resolve_data(None, cfg, "imagenet", 3, None, str(tmp_path / "eval"), labels=labels,
                                  calib_folder=str(tmp_path / "calib"), stream=True)
    assert len(calib) == 3 and len(test) == 5  # nothing kept out of the evaluation folder
    assert sorted(calib.labels.tolist()) == [0, 1, 999]  # class-balanced
    with pytest.raises(DataError, match="4 images, fewer than the 5 calibration images"):
        resolve_data(None, cfg, "imagenet", 5, None, str(tmp_path / "eval"), labels=labels,
                     calib_folder=str(tmp_path / "calib"))
    (tmp_path / "eval" / f"{val_name(9)}.JPEG").unlink()
    with pytest.raises(DataError, match=f"1 listed image\\(s\\) not found under .*eval or .*calib, first {val_name(9)}"):
        resolve_data(None, cfg, "imagenet", 3, None, str(tmp_path / "eval"), labels=labels,
                     calib_folder=str(tmp_path / "calib"))
    with pytest.raises(DataError, match="is the evaluation folder"):
        resolve_data(None, cfg, "imagenet", 3, None, str(tmp_path / "calib"), labels=labels,
                     calib_folder=str(tmp_path / "calib"))
    class_folders(tmp_path / "all" / "val")  # a calibration folder inside the evaluation folder
    with pytest.raises(DataError, match="3 calibration image\\(s\\) are also in the evaluation set, first .*all/val/n0"):
        resolve_data(None, cfg, "imagenet", 3, None, str(tmp_path / "all"), calib_folder=str(tmp_path / "all" / "val"))


def test_options_reach_the_recorded_source_and_verify(tmp_path):
    from tsptq.cli.model_args import eval_data_from_args, source_from_args
    from tsptq.evaluation.verify import file_eval_set
    from tsptq.intmodel.integer import Source

    args = build_parser().parse_args(["export", "--out", "m.tflite", "--data", "imagenet", "--folder", "F",
                                      "--labels", "L", "--calib-folder", "C"])
    src = source_from_args(args)
    assert (src.folder, src.labels, src.calib_folder) == ("F", "L", "C")
    assert Source(**{k: v for k, v in src.to_dict().items() if k not in ("labels", "calib_folder")}).labels is None
    cfg = small_cfg(1000)
    (tmp_path / "labels.txt").write_text(label_lines())
    recorded = Source(model=None, data="imagenet", folder=str(flat_val(tmp_path / "flat")), calib_images=2,
                      labels=str(tmp_path / "labels.txt"))
    fm = argparse.Namespace(metadata={"source": recorded.to_dict(), "config": cfg.to_dict()})
    args = build_parser().parse_args(["verify", "m.tflite", "--eval-images", "4"])
    _, _, test, labelled = file_eval_set(fm, args.file, eval_data_from_args(args))
    assert len(test) == 4 and labelled and test.labels.tolist() == [1, 999, 0, 999]  # val 3, 4, 5, 6


def test_flat_val_with_a_label_file_and_train_in_class_folders(tmp_path):
    """ImageNet as users have it: val flat with its label file, train in <synset>/ folders not in the label file."""
    cfg = small_cfg(1000)
    table = image_table()
    (tmp_path / "labels.txt").write_text("".join(f"{val_name(k)}.JPEG {table[k][0]}\n" for k in (5, 6, 7, 8, 9)))
    for k in (5, 6, 7, 8, 9):
        write_image(tmp_path / "val" / f"{val_name(k)}.JPEG", table[k][1])
    for k in (1, 2, 3, 4):
        s = table[k][0]
        write_image(tmp_path / "train" / s / f"{s}_{k}.JPEG", table[k][1])
    calib, test, _ = resolve_data(None, cfg, "imagenet", 3, None, str(tmp_path / "val"),
                                  labels=str(tmp_path / "labels.txt"), calib_folder=str(tmp_path / "train"), stream=True)
    assert len(calib) == 3 and len(test) == 5
    assert set(calib.labels.tolist()) <= {0, 1, 999}


def test_the_pixel_limit_can_be_raised_above_pils_and_must_be_a_number(tmp_path, monkeypatch):
    import PIL.Image

    root = class_folders(tmp_path / "val")
    monkeypatch.setenv("TSPTQ_MAX_IMAGE_PIXELS", "lots")
    assert "TSPTQ_MAX_IMAGE_PIXELS must be a positive whole number" in _decode_error(root, small_cfg())
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 600)  # PIL alone would refuse the 1200-1920 px images
    monkeypatch.setenv("TSPTQ_MAX_IMAGE_PIXELS", "5000")
    assert len(datasets.FolderImageSet.open(root, small_cfg()).load()) == 9
    assert PIL.Image.MAX_IMAGE_PIXELS == 600  # PIL's own setting is left as it was
