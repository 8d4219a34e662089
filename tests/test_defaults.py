"""Defaults a model file gets when it leaves a table out."""

from __future__ import annotations

from arsim.params import init_params
from arsim.spec import load_model

MODEL_WITHOUT_INIT = """
name = "no-init"
[defaults]
feedback = "fixed"
[[layers]]
name = "input"
size = 784
[[layers]]
name = "h1"
size = 300
activation = "relu"
[[layers]]
name = "output"
size = 10
"""


def test_a_model_without_init_draws_weights_of_standard_deviation_0_05(tmp_path):
    """No ``[init]``: W and ψ ~ N(0, 0.05²), the authors' draw (not the paper text's variance
    0.05, i.e. std 0.224). On 784 × 300 draws the sample std is within 1e-3 of 0.05 (its own
    standard error is 0.05 / √(2n) = 7e-5); the fixed ψ is drawn alike."""
    path = tmp_path / "no-init.toml"
    path.write_text(MODEL_WITHOUT_INIT)
    model = load_model(path)
    params = init_params(model)
    big = params.W[0]
    assert big.shape == (300, 784)
    print(f"std of W0 {big.std():.5f}, of psi0 {params.psi[0].std():.5f}")
    assert abs(big.std() - 0.05) < 1e-3 and abs(big.mean()) < 1e-3
    assert abs(params.psi[0].std() - 0.05) < 1e-3 and params.psi[0].shape == (784, 300)
    assert abs(params.W[1].std() - 0.05) < 5e-3
