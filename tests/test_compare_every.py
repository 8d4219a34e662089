"""Training compares with backprop on every k-th minibatch only: same weights, same angles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import PAPER_MODEL, PAPER_PROTOCOL, fashion_mnist_or_skip

from arsim import oracle
from arsim.metrics import batch_metrics
from arsim.spec import load_model, load_protocol
from arsim.train import TrainingOptions, train
from arsim.trainlog import Window


@pytest.fixture(scope="module")
def fmnist():
    return fashion_mnist_or_skip(train_limit=384, test_limit=500)


def test_comparing_every_kth_minibatch_leaves_the_weights_and_losses_alone(fmnist, tmp_path):
    """384 samples (6 minibatches), a row every 3: every minibatch compared, or the first,
    the fourth and each row's last only (compare_every = 4). Bit-identical weights and
    losses; the angle of a row's last minibatch is the same in both runs."""
    model, protocol = load_model(PAPER_MODEL), load_protocol(PAPER_PROTOCOL)
    common = dict(train_samples=384, metrics_every=3, progress=False, target="numpy")
    every, _ = train(model, protocol, fmnist, tmp_path / "every", 1, compare_every=1, **common)
    some, _ = train(model, protocol, fmnist, tmp_path / "some", 1, compare_every=4, **common)
    for name in ("final.npz", "backprop-final.npz"):
        with np.load(every / "weights" / name) as a, np.load(some / "weights" / name) as b:
            assert a.files == b.files
            for key in a.files:
                assert np.array_equal(a[key], b[key]), (name, key)
    rows_every = pd.read_csv(every / "metrics.csv")
    rows_some = pd.read_csv(some / "metrics.csv")
    for column in ("ar_loss", "bp_loss", "angle_deg_last", "ar_test_acc"):
        np.testing.assert_array_equal(rows_every[column], rows_some[column])
    # the first row saw minibatches 0, 1, 2 (compared: 0 and 2): its mean angle differs
    assert rows_every.angle_deg[0] != rows_some.angle_deg[0]


def test_the_compared_minibatches():
    options = TrainingOptions(seed=0, metrics_every=50, compare_every=10)
    compared = [index for index in range(120) if options.compared(index)]
    assert compared == [0, 10, 20, 30, 40, 49, 50, 60, 70, 80, 90, 99, 100, 110]
    every = TrainingOptions(seed=0, metrics_every=50, compare_every=1)
    assert all(every.compared(index) for index in range(120))


def test_window_averages_the_compared_minibatches_only(paper_model):
    """Losses over every minibatch, angles over those with a comparison."""
    rng = np.random.default_rng(0)
    before = oracle.init_params(paper_model, seed=0)
    after = before.copy()
    after.W[1] = after.W[1] - 1e-3 * rng.standard_normal(after.W[1].shape)
    x, y = rng.random((4, 784)), np.eye(10)[rng.integers(0, 10, 4)]
    full = batch_metrics(paper_model, before, after, x, y, 5e-4)
    window = Window(4)
    window.add(full, 1.0)
    window.add({"loss": 3.0}, 2.0)
    row = window.summary()
    assert row["ar_loss"] == pytest.approx((full["loss"] + 3.0) / 2) and row["bp_loss"] == 1.5
    assert row["angle_deg"] == row["angle_deg_last"] == full["angle_deg"]
    assert Window(4).summary() == {}
    only_loss = Window(4)
    only_loss.add({"loss": 3.0}, 2.0)
    assert only_loss.summary() == {"ar_loss": 3.0, "bp_loss": 2.0}
