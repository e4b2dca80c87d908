"""Image readers on tiny files written here in the real formats (IDX, CIFAR pickle batches, class folders,
Dogs-vs-Cats names), their refusals (truncated, corrupt, empty), and the task's split and batches."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from patchbench.data import images as I
from patchbench.data.images import DataMissing, read_dataset, read_idx
from patchbench.errors import ConfigError
from patchbench.recipe import build_run_config

# --------------------------------------------------------------------------------------------------
# writers in the real formats


def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx_set(root, n_train=12, n_test=5, side=6, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        labs = rng.integers(0, 10, n).astype(np.uint8)
        for kind, arr, dims in (("images", imgs, 3), ("labels", labs, 1)):
            name = f"{split}-{kind}-idx{dims}-ubyte" + (".gz" if gz else "")
            blob = idx_bytes(arr)
            (root / name).write_bytes(gzip.compress(blob) if gz else blob)
        data[split] = (imgs, labs)
    return data


def write_cifar(root, n=4, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(root / name, "wb") as f:  # the real batches: bytes keys, numpy data, list labels
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n}, f, protocol=2)
        batches[name] = (data, labels)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in I.CIFAR10_CLASSES], b"num_vis": 3072}, f, protocol=2)
    return batches


def write_image(path, size=(10, 8), color=(200, 30, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)


# --------------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_reads_both_splits(tmp_path, gz):
    data = write_idx_set(tmp_path / "mnist", gz=gz)
    raw = read_dataset("mnist", str(tmp_path / "mnist"), 0)
    np.testing.assert_array_equal(raw.train.images[..., 0], data["train"][0])
    np.testing.assert_array_equal(raw.train.labels, data["train"][1])
    np.testing.assert_array_equal(raw.test.images[..., 0], data["t10k"][0])
    assert raw.train.images.shape == (12, 6, 6, 1) and raw.classes == [str(i) for i in range(10)]


def test_idx_found_in_torchvision_layout_and_fashion_default(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "root" / "FashionMNIST" / "raw")
    raw = read_dataset("fashion_mnist", str(tmp_path / "root"), 0)
    assert raw.classes[0] == "T-shirt/top" and len(raw.train.labels) == 12
    monkeypatch.setattr(I, "FASHION_MNIST_DIR", str(tmp_path / "root" / "FashionMNIST" / "raw"))
    assert len(read_dataset("fashion_mnist", "", 0).test.labels) == 5  # found with no path at all


def test_truncated_idx_is_refused_naming_the_file(tmp_path):
    write_idx_set(tmp_path, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(ConfigError, match=r"train-images-idx3-ubyte is truncated: its header promises 432 bytes"):
        read_dataset("mnist", str(tmp_path), 0)


def test_truncated_gzip_idx_is_refused_naming_the_file(tmp_path):
    write_idx_set(tmp_path, gz=True)
    f = tmp_path / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:12])
    with pytest.raises(ConfigError, match=r"t10k-labels-idx1-ubyte\.gz cannot be read as an IDX file"):
        read_dataset("mnist", str(tmp_path), 0)


def test_idx_with_bad_magic_or_missing_files(tmp_path):
    (tmp_path / "x.idx").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ConfigError, match=r"x\.idx is not an IDX file"):
        read_idx(tmp_path / "x.idx")
    with pytest.raises(DataMissing, match=r"no mnist IDX files"):
        read_dataset("mnist", str(tmp_path / "empty"), 0)


# --------------------------------------------------------------------------------------------------
# CIFAR-10


def test_cifar_batches_are_read_in_hwc_order(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    raw = read_dataset("cifar10", str(tmp_path), 0)  # the parent folder is found too
    assert raw.train.images.shape == (20, 32, 32, 3) and raw.test.images.shape == (4, 32, 32, 3)
    data, labels = batches["data_batch_2"]
    img = raw.train.images[4]  # first image of the second batch
    assert img[0, 0, 0] == data[0, 0] and img[0, 0, 1] == data[0, 1024] and img[0, 1, 2] == data[0, 2048 + 1]
    assert raw.train.labels[4] == labels[0]
    assert raw.classes == I.CIFAR10_CLASSES


def test_truncated_cifar_batch_is_refused_naming_the_file(tmp_path):
    write_cifar(tmp_path)
    f = tmp_path / "data_batch_3"
    f.write_bytes(f.read_bytes()[:500])
    with pytest.raises(ConfigError, match=r"data_batch_3 is not a readable CIFAR batch"):
        read_dataset("cifar10", str(tmp_path), 0)


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil()}, f, protocol=2)
    with pytest.raises(ConfigError, match=r"test_batch is not a readable CIFAR batch .*refusing to load"):
        read_dataset("cifar10", str(tmp_path), 0)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# class folders and Dogs-vs-Cats


def test_class_folders_png_and_jpeg(tmp_path):
    write_image(tmp_path / "b_dog" / "1.png", (10, 8), (0, 0, 255))
    write_image(tmp_path / "b_dog" / "2.jpg", (12, 9), (0, 0, 255))
    write_image(tmp_path / "a_cat" / "sub" / "3.jpeg", (7, 7), (255, 0, 0))
    (tmp_path / "a_cat" / "notes.txt").write_text("not an image")
    with pytest.raises(ConfigError, match=r"data\.image_size: the images have different sizes"):
        read_dataset("folder", str(tmp_path), 0, cache_dir=None)
    raw = read_dataset("folder", str(tmp_path), 16, cache_dir=None)
    assert raw.classes == ["a_cat", "b_dog"] and raw.test is None and raw.ignored_files == 1
    assert raw.train.images.shape == (3, 16, 16, 3) and raw.train.labels.tolist() == [0, 1, 1]
    assert raw.train.images[0, 8, 8, 0] > 200 and raw.train.images[1, 8, 8, 2] > 200  # red cat, blue dogs


def test_class_folders_with_their_own_validation_split(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for c in ("x", "y"):
            for i in range(n):
                write_image(tmp_path / split / c / f"{i}.png", (8, 8))
    raw = read_dataset("folder", str(tmp_path), 0, cache_dir=None)
    assert len(raw.train.labels) == 6 and len(raw.test.labels) == 4 and raw.classes == ["x", "y"]
    shutil.rmtree(tmp_path / "val")
    raw = read_dataset("folder", str(tmp_path), 0, cache_dir=None)  # train/ alone: its classes, no test split
    assert raw.classes == ["x", "y"] and raw.test is None and len(raw.train.labels) == 6


def test_dogs_vs_cats_labels_come_from_the_file_names(tmp_path):
    for name in ("cat.0.jpg", "dog.0.jpg", "cat.1.jpg", "dog.10.jpg", "Dog.2.JPG"):
        write_image(tmp_path / name, (20, 12), fmt="JPEG")
    (tmp_path / "1.jpg").write_bytes(b"")  # Kaggle's unlabelled test names are not training data
    raw = read_dataset("dogs_vs_cats", str(tmp_path), 8, cache_dir=None)
    assert raw.classes == ["cat", "dog"]
    assert raw.train.labels.tolist() == [1, 0, 0, 1, 1]  # sorted names: Dog.2, cat.0, cat.1, dog.0, dog.10
    assert raw.ignored_files == 1 and raw.train.images.shape == (5, 8, 8, 3)


def test_corrupt_image_fail_and_skip(tmp_path, capsys):
    write_image(tmp_path / "cat.0.jpg", fmt="JPEG")
    write_image(tmp_path / "dog.0.jpg", fmt="JPEG")
    good = (tmp_path / "dog.0.jpg").read_bytes()
    (tmp_path / "dog.1.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (tmp_path / "cat.1.jpg").write_bytes(b"\x00not a jpeg at all")
    with pytest.raises(ConfigError, match=r"cat\.1\.jpg cannot be decoded as an image .*on_bad_image=skip"):
        read_dataset("dogs_vs_cats", str(tmp_path), 8, on_bad_image="fail", cache_dir=None)
    raw = read_dataset("dogs_vs_cats", str(tmp_path), 8, on_bad_image="skip", cache_dir=None)
    assert len(raw.train.labels) == 2 and sorted(os.path.basename(b) for b in raw.bad_files) == ["cat.1.jpg", "dog.1.jpg"]
    assert "skipped 2 image(s)" in capsys.readouterr().err


def test_empty_or_missing_folders_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no class folders in .*empty"):
        read_dataset("folder", str(tmp_path / "empty"), 8, cache_dir=None)
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(ConfigError, match=r"class folder .*cls holds no images"):
        read_dataset("folder", str(tmp_path / "empty"), 8, cache_dir=None)
    with pytest.raises(ConfigError, match=r"no cat\.\*\.jpg / dog\.\*\.jpg files"):
        read_dataset("dogs_vs_cats", str(tmp_path / "empty"), 8, cache_dir=None)
    with pytest.raises(DataMissing, match=r"is not a folder"):
        read_dataset("folder", str(tmp_path / "nowhere"), 8, cache_dir=None)


def test_decoded_folders_are_cached_and_invalidated(tmp_path, monkeypatch):
    for i in range(3):
        write_image(tmp_path / "d" / "c" / f"{i}.png", (9, 9), (i * 50, 0, 0))
    cache = tmp_path / "cache"
    first = read_dataset("folder", str(tmp_path / "d"), 4, cache_dir=cache)
    monkeypatch.setattr(I, "_decode_one", lambda *a: pytest.fail("decoded again despite the cache"))
    again = read_dataset("folder", str(tmp_path / "d"), 4, cache_dir=cache)
    assert isinstance(again.train.images, np.memmap)
    np.testing.assert_array_equal(np.asarray(again.train.images), first.train.images)
    monkeypatch.undo()
    write_image(tmp_path / "d" / "c" / "3.png", (9, 9))  # a new file: a new cache entry
    assert len(read_dataset("folder", str(tmp_path / "d"), 4, cache_dir=cache).train.labels) == 4


# --------------------------------------------------------------------------------------------------
# the task: split, limits, fallback, batches, prepare


def task_for(data: dict, model: dict | None = None, **train):
    from patchbench.engine.trainer import build

    model = model or {"name": "convmixer", "dim": 8, "depth": 1, "kernel": 3, "patch": 2}
    cfg = build_run_config({"task": "image_classification", "data": data, "model": model,
                            "train": {"batch_size": 4, **train}})
    return build(cfg)


def test_held_out_split_is_fixed_and_disjoint():
    task, _, _ = task_for({"dataset": "digits", "val_fraction": 0.2})
    again, _, _ = task_for({"dataset": "digits", "val_fraction": 0.2}, seed=7)  # train.seed does not move it
    assert len(task.val) == round(1797 * 0.2) and task.num_train == 1797 - len(task.val)
    assert not set(task.train.index) & set(task.val.index)
    np.testing.assert_array_equal(task.val.index, again.val.index)
    assert "seeded 20%" in task.describe()["held_out"]


def test_test_split_is_used_and_limits_apply(tmp_path):
    write_idx_set(tmp_path, n_train=30, n_test=10)
    task, cfg, _model = task_for({"dataset": "mnist", "path": str(tmp_path), "train_limit": 20, "val_limit": 6, "image_size": 8})
    assert task.num_train == 20 and len(task.val) == 6 and task.val.split is not task.train.split
    assert (cfg.model.num_classes, cfg.model.image_size, cfg.model.in_chans) == (10, 8, 1)
    assert task.train.shape == (20, 8, 8, 1)
    assert task.describe()["held_out"] == "the dataset's test split"


def test_fallback_is_used_only_when_files_are_absent(tmp_path, capsys):
    task, _, _ = task_for({"dataset": "mnist", "path": str(tmp_path / "none"), "fallback": "digits"})
    assert task.kind == "digits" and "fell back to digits" in task.describe()["fallback"]
    write_idx_set(tmp_path / "bad", gz=False)
    (tmp_path / "bad" / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x0c")
    with pytest.raises(ConfigError, match="is truncated"):  # broken files are an error, not a reason to fall back
        task_for({"dataset": "mnist", "path": str(tmp_path / "bad"), "fallback": "digits"})


def test_batches_are_deterministic_and_augmented():
    plain, _, _ = task_for({"dataset": "digits", "image_size": 16})
    aug, _, _ = task_for({"dataset": "digits", "image_size": 16, "hflip": True, "rotate": 15})
    ib = np.array([5, 9, 2, 11])
    b = plain.make_batch(ib)
    assert b["x"].shape == (4, 1, 16, 16) and b["x"].dtype == torch.float32
    torch.testing.assert_close(b["x"], torch.from_numpy(plain.train.images(ib)).permute(0, 3, 1, 2).float() / 255)
    a1, a2 = aug.make_batch(ib), aug.make_batch(ib)
    torch.testing.assert_close(a1["x"], a2["x"])  # same indices -> same augmentation (resume-exact)
    assert not torch.allclose(a1["x"], b["x"])
    assert torch.equal(a1["y"], b["y"])


def test_batches_through_dataloader_workers_keep_order():
    task, _, _ = task_for({"dataset": "digits", "image_size": 8, "hflip": True}, num_workers=2)
    order = [np.array([1, 2, 3, 4]), np.array([9, 8, 7, 6]), np.array([0, 5, 10, 15])]
    got = list(task.batches(iter(order)))
    for ib, batch in zip(order, got):
        torch.testing.assert_close(batch["x"], task.make_batch(ib)["x"])


def test_prepare_fills_and_checks_model_fields():
    with pytest.raises(ConfigError, match=r"model\.num_classes: 3 but digits has 10 classes"):
        task_for({"dataset": "digits"}, {"name": "convmixer", "dim": 8, "depth": 1, "kernel": 3, "patch": 2, "num_classes": 3})
    with pytest.raises(ConfigError, match=r"model\.image_size: 32 but the images are 8x8"):
        task_for({"dataset": "digits"}, {"name": "vit", "image_size": 32, "patch": 4, "dim": 8, "heads": 2, "depth": 1})
    with pytest.raises(ConfigError, match=r"model\.patch: 5 does not divide image size 16"):
        task_for({"dataset": "digits", "image_size": 16}, {"name": "vit", "patch": 5, "dim": 8, "heads": 2, "depth": 1})


def test_data_config_refusals():
    for data, msg in (({"dataset": "imagenet"}, r"data\.dataset: 'imagenet'; valid datasets: folder, dogs_vs_cats"),
                      ({"val_fraction": 1.0}, r"data\.val_fraction: 1\.0 must be between 0 and 1"),
                      ({"on_bad_image": "ignore"}, r"data\.on_bad_image: 'ignore'; valid: skip, fail")):
        with pytest.raises(ConfigError, match=msg):
            task_for(data)


@pytest.mark.slow
def test_evaluate_reports_held_out_loss_accuracy_and_running_train_accuracy():
    task, _, model = task_for({"dataset": "digits", "val_fraction": 0.1})
    cpu = torch.device("cpu")
    out = task.evaluate(model, cpu, lambda: torch.autocast("cpu", enabled=False))
    assert set(out) == {"val_loss", "val_accuracy"} and 0 <= out["val_accuracy"] <= 1
    with torch.no_grad():
        logits = model.eval()(task.to_tensor(task.val.images(slice(None))))
    assert out["val_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.from_numpy(task.val.labels)).item(), rel=1e-5)
    model.train()
    task.train_loss(model, task.make_batch(np.arange(4)))
    out = task.evaluate(model, cpu, lambda: torch.autocast("cpu", enabled=False))
    assert "train_accuracy" in out and out["train_accuracy"] in (0, 0.25, 0.5, 0.75, 1.0)


def test_rotate_p_rotates_only_that_share_of_images():
    from patchbench.tasks.image_classification import augment

    x = torch.rand(64, 1, 12, 12)
    none = augment(x, np.random.default_rng(0), False, 30.0, rotate_p=0.0)
    torch.testing.assert_close(none, x, atol=1e-5, rtol=0)  # angle 0: the identity resampling
    half = augment(x, np.random.default_rng(0), False, 30.0, rotate_p=0.5)
    changed = (half - x).abs().flatten(1).amax(1) > 1e-3
    assert 16 < int(changed.sum()) < 48
