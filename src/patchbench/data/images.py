"""Image datasets read from their own on-disk formats into uint8 arrays (N, H, W, C) + int64 labels.

    folder         class-per-folder tree: PATH/<class>/<image>, or PATH/train/<class>/... (beside it,
                   PATH/val|valid|validation|test/<class>/... is the held-out split)
    dogs_vs_cats   Kaggle Dogs-vs-Cats flat folder: cat.0.jpg, dog.0.jpg, ... (label = file-name prefix)
    mnist          IDX files (train-images-idx3-ubyte[.gz], ..., t10k-*), raw or gzipped; also found in
    fashion_mnist  PATH/raw, PATH/MNIST/raw, PATH/FashionMNIST/raw (torchvision's layout); Fashion-MNIST
                   defaults to /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist)
    cifar10        the python batches (data_batch_1..5, test_batch, batches.meta) in PATH or
                   PATH/cifar-10-batches-py, unpickled with an allow-list (no arbitrary code)
    digits         scikit-learn's bundled 8×8 digits (1,797 images, no files, no test split)

Image files are decoded once (resized to image_size, RGB) with a thread pool and cached as a .npy
memmap keyed by the files' names, sizes and mtimes, so later runs (a study runs each model in a fresh
process) start at once. torchvision downloads only when asked (download=True).

A file that exists but is broken is a ConfigError naming it; a dataset whose files are absent raises
DataMissing (a ConfigError) so that a recipe can name a fallback dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from patchbench.errors import ConfigError, DataMissing  # noqa: F401 - DataMissing re-exported

KINDS = ("folder", "dogs_vs_cats", "mnist", "fashion_mnist", "cifar10", "digits")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
VAL_DIRS = ("val", "valid", "validation", "test")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CACHE_VERSION = 1




@dataclass
class Split:
    images: np.ndarray  # uint8 (N, H, W, C); possibly a read-only memmap
    labels: np.ndarray  # int64 (N,)


class Subset:
    """Rows `index` of a split, not copied (a memory-mapped cache stays on disk until a batch reads it)."""

    def __init__(self, split: Split, index: np.ndarray | None = None):
        self.split = split
        self.index = np.arange(len(split.labels)) if index is None else np.asarray(index, dtype=np.int64)
        self.labels = split.labels[self.index]  # int64 (n,)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.split.images.shape[1:])  # (n, H, W, C)

    def images(self, rows: np.ndarray | slice) -> np.ndarray:
        """uint8 (b, H, W, C) of the subset's `rows`."""
        return np.asarray(self.split.images[self.index[rows]])

    def subset(self, rows: np.ndarray) -> Subset:
        return Subset(self.split, self.index[rows])

    def resized(self, size: int) -> Subset:
        """This subset at size × size (materialised only when the size changes)."""
        if self.split.images.shape[1:3] == (size, size):
            return self
        return Subset(Split(resize_array(self.images(slice(None)), size), self.labels))


@dataclass
class RawDataset:
    """What a reader found: a training split, the dataset's own test split if it has one, class names."""

    train: Split
    test: Split | None
    classes: list[str]
    source: str
    bad_files: list[str] = field(default_factory=list)
    ignored_files: int = 0


# --------------------------------------------------------------------------------------------------
# entry point


def read_dataset(kind: str, path: str, image_size: int, on_bad_image: str = "fail", download: bool = False,
                 cache_dir: Path | None = None, workers: int = 0) -> RawDataset:
    """Read one dataset. Image files are decoded at image_size (0 = native; they must then agree);
    array datasets (IDX, CIFAR, digits) come at their native size: resize them with resize_array
    after taking any subset, which is cheaper."""
    if kind not in KINDS:
        raise ConfigError(f"data.dataset: {kind!r}; valid datasets: {', '.join(KINDS)}")
    if on_bad_image not in ("skip", "fail"):
        raise ConfigError(f"data.on_bad_image: {on_bad_image!r}; valid: skip, fail")
    if kind == "digits":
        raw = read_digits()
    elif kind in ("mnist", "fashion_mnist"):
        raw = read_idx_dataset(kind, path, download)
    elif kind == "cifar10":
        raw = read_cifar10(path, download)
    else:
        raw = read_image_files(kind, path, image_size, on_bad_image, cache_dir, workers)
    return raw


def resize_array(images: np.ndarray, size: int, chunk: int = 2048) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 (N, size, size, C), bilinear with antialiasing (a no-op at that size)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    import torch
    import torch.nn.functional as F

    out = np.empty((len(images), size, size, images.shape[3]), dtype=np.uint8)
    for i in range(0, len(images), chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + chunk])).permute(0, 3, 1, 2).float()  # (b, C, H, W)
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i:i + chunk] = y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


# --------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (raw or .gz): magic 0 0 dtype ndim, ndim big-endian uint32 sizes, then the data."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                blob = f.read()
        else:
            blob = path.read_bytes()
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        raise ConfigError(f"data.path: {path} cannot be read as an IDX file ({type(e).__name__}: {e}); "
                          "it may be truncated or not gzip") from None
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] not in IDX_DTYPES:
        raise ConfigError(f"data.path: {path} is not an IDX file (bad magic number {blob[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(IDX_DTYPES[blob[2]]), blob[3]
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise ConfigError(f"data.path: {path} is truncated inside its IDX header")
    dims = [int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    want = int(np.prod(dims)) * dtype.itemsize
    have = len(blob) - header
    if have < want:
        raise ConfigError(f"data.path: {path} is truncated: its header promises {want} bytes of data ({'x'.join(map(str, dims))}), "
                          f"it holds {have}")
    return np.frombuffer(blob, dtype=dtype, count=int(np.prod(dims)), offset=header).reshape(dims)


def find_idx_dir(root: Path) -> Path | None:
    for d in (root, root / "raw", root / "MNIST" / "raw", root / "FashionMNIST" / "raw"):
        if any((d / (IDX_FILES["train"][0] + s)).is_file() for s in ("", ".gz")):
            return d
    return None


def _idx_file(d: Path, stem: str) -> Path:
    for s in (".gz", ""):
        if (d / (stem + s)).is_file():
            return d / (stem + s)
    raise ConfigError(f"data.path: {d} has {IDX_FILES['train'][0]} but not {stem}[.gz]; the IDX set is incomplete")


def read_idx_dataset(kind: str, path: str, download: bool) -> RawDataset:
    if not path and kind != "fashion_mnist":
        raise DataMissing(f"data.path: give the folder with the {kind} IDX files "
                          "(or set data.download=true with a data.path to download into)")
    root = Path(path or FASHION_MNIST_DIR).expanduser()
    d = find_idx_dir(root)
    if d is None and download:
        import torchvision

        cls = torchvision.datasets.FashionMNIST if kind == "fashion_mnist" else torchvision.datasets.MNIST
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
        d = find_idx_dir(root)
    if d is None:
        hint = " (apt-get install dataset-fashion-mnist provides it)" if kind == "fashion_mnist" else ""
        raise DataMissing(f"data.path: no {kind} IDX files ({IDX_FILES['train'][0]}[.gz], ...) in {root}{hint}; "
                          "point data.path at them or set data.download=true")
    splits = {}
    for split, (img_stem, lab_stem) in IDX_FILES.items():
        img_path, lab_path = _idx_file(d, img_stem), _idx_file(d, lab_stem)
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or labels.ndim != 1:
            raise ConfigError(f"data.path: {img_path} should hold (N, H, W) images and {lab_path.name} (N,) labels; "
                              f"got {images.shape} and {labels.shape}")
        if len(images) != len(labels):
            raise ConfigError(f"data.path: {img_path} holds {len(images)} images but {lab_path} holds {len(labels)} labels")
        splits[split] = Split(images.astype(np.uint8)[..., None], labels.astype(np.int64))
    classes = FASHION_CLASSES if kind == "fashion_mnist" else [str(i) for i in range(10)]
    n = int(max(splits["train"].labels.max(), splits["test"].labels.max())) + 1
    if n > len(classes):
        classes = [str(i) for i in range(n)]
    return RawDataset(splits["train"], splits["test"], classes, f"{kind} IDX in {d}")


# --------------------------------------------------------------------------------------------------
# CIFAR-10 python batches

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch cannot run code on load."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode")})

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError) as e:
        raise ConfigError(f"data.path: {path} is not a readable CIFAR batch ({type(e).__name__}: {str(e)[:80]}); "
                          "it may be truncated") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"data.path: {path} is not a CIFAR batch (expected a pickled dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(path: Path) -> Split:
    d = _unpickle(path)
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise ConfigError(f"data.path: {path} is not a CIFAR-10 batch (expected data (N, 3072) uint8 and labels)")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(data):
        raise ConfigError(f"data.path: {path} holds {len(data)} images but {len(labels)} labels; it may be truncated")
    images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    return Split(np.ascontiguousarray(images), labels)


def read_cifar10(path: str, download: bool) -> RawDataset:
    if not path:
        raise DataMissing("data.path: give the folder with CIFAR-10's python batches (cifar-10-batches-py), "
                          "or set data.download=true with a data.path to download into")
    root = Path(path).expanduser()
    d = next((c for c in (root, root / "cifar-10-batches-py") if (c / "data_batch_1").is_file()), None)
    if d is None and download:
        import torchvision

        torchvision.datasets.CIFAR10(root=str(root), train=True, download=True)
        d = root / "cifar-10-batches-py"
    if d is None:
        raise DataMissing(f"data.path: no CIFAR-10 python batches (data_batch_1..5, test_batch) in {root}; "
                          "point data.path at them or set data.download=true")
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in names + ["test_batch"] if not (d / n).is_file()]
    if missing:
        raise ConfigError(f"data.path: {d} lacks {', '.join(missing)}; CIFAR-10 needs data_batch_1..5 and test_batch")
    parts = [_cifar_batch(d / n) for n in names]
    train = Split(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
    classes = CIFAR10_CLASSES
    if (d / "batches.meta").is_file():
        meta = _unpickle(d / "batches.meta")
        names_raw = meta.get("label_names")
        if names_raw:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names_raw]
    return RawDataset(train, _cifar_batch(d / "test_batch"), classes, f"cifar10 batches in {d}")


# --------------------------------------------------------------------------------------------------
# scikit-learn digits


def read_digits() -> RawDataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataMissing("data.dataset: digits needs scikit-learn (pip install scikit-learn)") from None
    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255, (N, 8, 8, 1)
    return RawDataset(Split(images, d.target.astype(np.int64)), None, [str(i) for i in range(10)], "scikit-learn digits (8x8)")


# --------------------------------------------------------------------------------------------------
# image files: class folders and Dogs-vs-Cats


def _list_dir(d: Path) -> list[Path]:
    try:
        return sorted(d.iterdir())
    except OSError as e:
        raise ConfigError(f"data.path: cannot read folder {d} ({e.strerror or e})") from None


def _class_tree(root: Path) -> tuple[list[Path], list[str], list[str], int]:
    """Files, their class names and the sorted class list of PATH/<class>/<image> (recursive in a class)."""
    class_dirs = [p for p in _list_dir(root) if p.is_dir() and not p.name.startswith(".")]
    if not class_dirs:
        raise ConfigError(f"data.path: no class folders in {root} "
                          f"(expected {root}/<class>/<image>; for Dogs-vs-Cats file names use data.dataset=dogs_vs_cats)")
    files, names, ignored = [], [], 0
    for cd in class_dirs:
        found = 0
        try:
            entries = sorted(p for p in cd.rglob("*") if p.is_file())
        except OSError as e:
            raise ConfigError(f"data.path: cannot read folder {cd} ({e.strerror or e})") from None
        for p in entries:
            if p.suffix.lower() in IMAGE_SUFFIXES:
                files.append(p)
                names.append(cd.name)
                found += 1
            else:
                ignored += 1
        if not found:
            raise ConfigError(f"data.path: class folder {cd} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                              "remove it or add images")
    return files, names, sorted({cd.name for cd in class_dirs}), ignored


def _dogs_vs_cats(root: Path) -> tuple[list[Path], list[str], int]:
    files, names, ignored = [], [], 0
    for p in _list_dir(root):
        if not p.is_file():
            continue
        prefix = p.name.split(".", 1)[0].lower()
        if prefix in ("cat", "dog") and p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)
            names.append(prefix)
        else:
            ignored += 1
    if not files:
        raise ConfigError(f"data.path: no cat.*.jpg / dog.*.jpg files in {root}; "
                          "Dogs-vs-Cats needs Kaggle's train folder (labels come from the file names)")
    return files, names, ignored


def read_image_files(kind: str, path: str, image_size: int, on_bad_image: str, cache_dir: Path | None, workers: int) -> RawDataset:
    if not path:
        raise DataMissing(f"data.path: give the image folder for data.dataset={kind}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataMissing(f"data.path: {root} is not a folder; "
                          f"give the {'Dogs-vs-Cats train folder' if kind == 'dogs_vs_cats' else 'class-per-folder image tree'}")
    if kind == "dogs_vs_cats":
        files, names, ignored = _dogs_vs_cats(root)
        classes, test = ["cat", "dog"], None  # the seed's labels: cat 0, dog 1
    else:
        val_dir = next((root / v for v in VAL_DIRS if (root / v).is_dir()), None)
        test = None
        if (root / "train").is_dir():  # PATH/train/<class>/..., with PATH/val|test/<class>/... if present
            files, names, classes, ignored = _class_tree(root / "train")
            if val_dir is not None:
                vfiles, vnames, vclasses, vign = _class_tree(val_dir)
                unknown = sorted(set(vclasses) - set(classes))
                if unknown:
                    raise ConfigError(f"data.path: {val_dir} has classes {unknown} that {root / 'train'} lacks")
                test, ignored = (vfiles, vnames), ignored + vign
        else:
            files, names, classes, ignored = _class_tree(root)
    index = {c: i for i, c in enumerate(classes)}
    bad: list[str] = []
    train = _decode_split(files, [index[n] for n in names], image_size, on_bad_image, cache_dir, workers, bad)
    test_split = _decode_split(test[0], [index[n] for n in test[1]], image_size, on_bad_image, cache_dir, workers, bad) if test else None
    if bad:
        print(f"data: skipped {len(bad)} image(s) that cannot be decoded (data.on_bad_image=skip), first: {bad[0]}", file=sys.stderr)
    return RawDataset(train, test_split, classes, f"{kind} in {root}", bad_files=bad, ignored_files=ignored)


def _decode_one(path: Path, size: int) -> np.ndarray | str:
    """RGB uint8 (H, W, 3), resized to size×size when size > 0; an error message if undecodable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size:
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for broken files
        return f"{type(e).__name__}: {str(e)[:80]}"


def _decode_split(files: list[Path], labels: list[int], size: int, on_bad_image: str, cache_dir: Path | None,
                  workers: int, bad: list[str]) -> Split:
    key = _cache_key(files, size)
    if cache_dir is not None:
        hit = _cache_load(cache_dir, key)
        if hit is not None:
            images, keep, bad_here = hit
            if bad_here and on_bad_image == "fail":
                raise ConfigError(f"data.path: {bad_here[0]} cannot be decoded as an image; "
                                  "set data.on_bad_image=skip to leave such files out")
            bad.extend(bad_here)
            return Split(images, np.asarray(labels, dtype=np.int64)[keep])
    keep, bad_here, arrays = [], [], []
    out = np.empty((len(files), size, size, 3), dtype=np.uint8) if size else None  # filled in place: one copy in memory
    pool = ThreadPoolExecutor(max_workers=max(workers, os.cpu_count() or 1))
    try:
        for i, (p, d) in enumerate(zip(files, pool.map(lambda f: _decode_one(f, size), files))):
            if isinstance(d, str):
                if on_bad_image == "fail":
                    raise ConfigError(f"data.path: {p} cannot be decoded as an image ({d}); "
                                      "set data.on_bad_image=skip to leave such files out")
                bad_here.append(str(p))
                continue
            if out is not None:
                out[len(keep)] = d
            else:
                arrays.append(d)
            keep.append(i)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if not keep:
        raise ConfigError(f"data.path: none of the {len(files)} image files under {files[0].parent} can be decoded")
    if out is not None:
        images = out[:len(keep)]
    else:
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            few = ", ".join(f"{s[1]}x{s[0]}" for s in sorted(shapes)[:3])
            raise ConfigError(f"data.image_size: the images have different sizes ({few}, ...); set data.image_size to resize them")
        images = np.stack(arrays)
    if cache_dir is not None:
        _cache_save(cache_dir, key, images, keep, bad_here)
    bad.extend(bad_here)
    return Split(images, np.asarray(labels, dtype=np.int64)[keep])


def _cache_key(files: list[Path], size: int) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION};size={size};".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:24]


def _cache_load(cache_dir: Path, key: str):
    meta_path = cache_dir / f"images-{key}.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(cache_dir / f"images-{key}.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None  # a damaged cache entry is simply rebuilt
    return images, np.asarray(meta["keep"], dtype=np.int64), list(meta["bad"])


def _cache_save(cache_dir: Path, key: str, images: np.ndarray, keep: list[int], bad: list[str]) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".images-{key}.npy.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.save(f, images)
        os.replace(tmp, cache_dir / f"images-{key}.npy")
        tmp = cache_dir / f".images-{key}.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps({"keep": keep, "bad": bad}))
        os.replace(tmp, cache_dir / f"images-{key}.json")  # written last: its presence marks a whole entry
    except OSError as e:
        print(f"data: could not cache decoded images in {cache_dir} ({e.strerror}); decoding again next time", file=sys.stderr)



# --------------------------------------------------------------------------------------------------
# CIFAR-10 as kzl/universal-computation trained it (datasets/cifar10.py, data_aug=True)
#
#   train: ToTensor -> RandomCrop(32, padding=4) -> RandomHorizontalFlip -> RandomRotation(20) -> Normalize
#   test:  ToTensor -> Normalize
#
# with kzl's constants: mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010) (the widely copied
# CIFAR-10 std, not the exact per-pixel std of 0.247/0.243/0.261). torchvision's defaults apply: the crop
# pads with zeros, the rotation angle is uniform in [-20, 20] degrees, nearest-neighbour, zero fill.
# The random draws come from a numpy generator the caller seeds, so a batch's pixels are reproducible.

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
KZL_CROP_PAD = 4
KZL_ROTATE = 20.0
TRANSFORMS = ("auto", "kzl", "none")


def resolve_transform(choice: str, dataset: str) -> str:
    """data.transform: auto -> kzl for CIFAR-10 (what the seeds measured), none for everything else."""
    if choice not in TRANSFORMS:
        raise ConfigError(f"data.transform: {choice!r}; valid: {', '.join(TRANSFORMS)} (auto = kzl for cifar10, none otherwise)")
    if choice == "auto":
        return "kzl" if dataset == "cifar10" else "none"
    return choice


def cifar_normalize(x):
    """(B, 3, H, W) in [0, 1] -> (x - mean) / std per channel, kzl's constants."""
    import torch

    if x.shape[1] != 3:
        raise ConfigError(f"data.transform: kzl normalises 3-channel CIFAR images; these have {x.shape[1]} channel(s); "
                          "set data.transform=none")
    mean = torch.tensor(CIFAR_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def kzl_augment(x, rng: np.random.Generator):
    """(B, C, H, W) in [0, 1] -> the same shape: per image a zero-padded random crop, a flip with
    p = 1/2 and a rotation uniform in ±20° (nearest, zero fill), in kzl's order. Not normalised."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    B, _, H, W = x.shape
    p = KZL_CROP_PAD
    padded = torch.nn.functional.pad(x, (p, p, p, p))  # (B, C, H+2p, W+2p), zeros
    tops = rng.integers(0, 2 * p + 1, size=B)
    lefts = rng.integers(0, 2 * p + 1, size=B)
    flips = rng.random(B) < 0.5
    angles = rng.uniform(-KZL_ROTATE, KZL_ROTATE, size=B)
    out = torch.empty_like(x)
    for i in range(B):
        img = padded[i, :, tops[i]:tops[i] + H, lefts[i]:lefts[i] + W]  # (C, H, W)
        if flips[i]:
            img = img.flip(-1)
        out[i] = TF.rotate(img, float(angles[i]), interpolation=InterpolationMode.NEAREST, fill=0.0)
    return out
