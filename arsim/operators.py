"""The linear maps of the connections: dense, convolution and max-pooling, in NumPy.

Every connection ``c`` has an operator with

* ``forward(x̂_source, W, out=None) -> a``, ``(batch, n_source) -> (batch, n_target)``: its
  contribution to the target's pre-activation;
* ``backward(signal, B, out=None) -> (batch, n_source)``: the top-down input the source receives
  from a target signal ``(batch, n_target)``; ``B`` is the feedback weights in the convention of
  ``Params.feedback`` (``Wᵀ`` or ψ of shape ``(n_source, n_target)`` for a dense connection; the
  kernel ``W`` or ψ of shape ``(C_out, C_in, k, k)`` for a convolution, applied transposed);
* ``weight_gradient(δ, x̂) -> same shape as W``: ``Σ_batch`` of the local update factor;
* ``bias_vector(b) -> (n_target,)`` and ``bias_gradient(δ) -> b.shape``.

``forward`` and ``backward`` write into ``out`` when given (an array of the result's shape) and
return it; the dense operator then has BLAS write there directly (``np.matmul(..., out=out)``).

Layers with a ``shape = [C, H, W]`` hold their activities flattened in C, H, W order (as
``torch.flatten``). A max-pooling connection has no weights (an empty ``W``); its forward sweep
remembers the argmax of every window, and its transpose routes δ back to those positions.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Array = np.ndarray


def as_feedback(weights: Array) -> Array:
    """Feedback weights that carry ``W`` exactly: ``Wᵀ`` for a dense matrix, else ``W`` itself.

    A convolution's transposed map uses the kernel itself (``ConvOperator.backward``), so its ψ
    has W's shape; a max-pooling connection's W is empty.
    """
    return weights.T if weights.ndim == 2 else weights


def conv_output(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output height (or width) of a convolution: ``⌊(size + 2 padding − kernel) / stride⌋ + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


class Operator:
    """The interface of a connection's linear map (shapes in the module docstring)."""

    kind = ""

    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the connection's W (and of a conv's ψ)."""
        raise NotImplementedError

    def forward(self, xhat: Array, weights: Array, out: Array | None = None) -> Array:
        """Contribution ``(batch, n_target)`` of the source activities ``(batch, n_source)``."""
        raise NotImplementedError

    def backward(self, signal: Array, feedback: Array, out: Array | None = None) -> Array:
        """Top-down input ``(batch, n_source)`` from a target signal ``(batch, n_target)``."""
        raise NotImplementedError

    def weight_gradient(self, delta: Array, xhat: Array) -> Array:
        """``Σ_batch`` update factor of W from δ of the target and x̂ of the source."""
        raise NotImplementedError

    def bias_vector(self, bias: Array) -> Array:
        """The bias as one value per target neuron, ``(n_target,)``."""
        raise NotImplementedError

    def bias_gradient(self, delta: Array) -> Array:
        """``Σ_batch`` update factor of the bias (the bias's shape)."""
        raise NotImplementedError


class DenseOperator(Operator):
    """``a = x̂ Wᵀ`` with ``W`` of shape ``(n_target, n_source)`` (the existing arithmetic)."""

    kind = "dense"

    def __init__(self, n_source: int, n_target: int):
        self.n_source, self.n_target = n_source, n_target

    def weight_shape(self) -> tuple[int, ...]:
        """See :meth:`Operator.weight_shape`."""
        return (self.n_target, self.n_source)

    def forward(self, xhat: Array, weights: Array, out: Array | None = None) -> Array:
        """See :meth:`Operator.forward`."""
        return np.matmul(xhat, weights.T, out=out)

    def backward(self, signal: Array, feedback: Array, out: Array | None = None) -> Array:
        """See :meth:`Operator.backward`."""
        return np.matmul(signal, feedback.T, out=out)

    def weight_gradient(self, delta: Array, xhat: Array) -> Array:
        """See :meth:`Operator.weight_gradient`."""
        return delta.T @ xhat

    def bias_vector(self, bias: Array) -> Array:
        """See :meth:`Operator.bias_vector`."""
        return bias

    def bias_gradient(self, delta: Array) -> Array:
        """See :meth:`Operator.bias_gradient`."""
        return delta.sum(axis=0)


class ConvOperator(Operator):
    """A 2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``), shared weights.

    Parameters
    ----------
    source : tuple of int
        ``(C_in, H, W)`` of the source layer.
    target : tuple of int
        ``(C_out, H_out, W_out)`` of the target layer.
    kernel, stride, padding : int
        Square kernel size, stride and zero padding (in pixels).

    Notes
    -----
    The weights have shape ``(C_out, C_in, k, k)``; the bias (if any) one value per output
    channel, ``(C_out,)``. The forward map is im2col (a strided sliding-window view) contracted
    with the kernel; the transposed map scatters ``signal ⊗ B`` back to the window positions.
    """

    kind = "conv"

    def __init__(self, source, target, kernel: int, stride: int = 1, padding: int = 0):
        self.source, self.target = tuple(source), tuple(target)
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def weight_shape(self) -> tuple[int, ...]:
        """See :meth:`Operator.weight_shape`."""
        return (self.target[0], self.source[0], self.kernel, self.kernel)

    def _windows(self, xhat: Array) -> Array:
        """im2col view ``(batch, C_in, H_out, W_out, k, k)`` of the padded input."""
        c, h, w = self.source
        images = xhat.reshape(len(xhat), c, h, w)
        p, s = self.padding, self.stride
        if p:
            images = np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)))
        windows = sliding_window_view(images, (self.kernel, self.kernel), axis=(2, 3))
        _, ho, wo = self.target
        return windows[:, :, : s * (ho - 1) + 1 : s, : s * (wo - 1) + 1 : s]

    def _blocks(self, batch: int) -> range:
        """Starts of batch blocks whose im2col copy holds at most :attr:`block_entries`."""
        _, ho, wo = self.target
        per_sample = self.source[0] * ho * wo * self.kernel**2
        return range(0, batch, max(1, self.block_entries // per_sample))

    block_entries = 4_000_000
    """Entries of the im2col copy per block of samples (32 MB; evaluation sweeps 10,000)."""

    def forward(self, xhat: Array, weights: Array, out: Array | None = None) -> Array:
        """See :meth:`Operator.forward`."""
        blocks = self._blocks(len(xhat))
        step = blocks.step
        parts = [
            np.einsum(
                "bchwij,ocij->bohw", self._windows(xhat[a : a + step]), weights, optimize=True
            )
            for a in blocks
        ]
        result = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return _into(result.reshape(len(xhat), -1), out)

    def backward(self, signal: Array, feedback: Array, out: Array | None = None) -> Array:
        """See :meth:`Operator.backward`.

        The transposed convolution: ``signal ⊗ B`` per window, ``(C_in, k, k, batch, H_out ·
        W_out)`` by one matrix product, scattered back (summed) onto the padded input grid at
        the windows' positions, ``k²`` strided additions.
        """
        batch = len(signal)
        c, h, w = self.source
        n_out, ho, wo = self.target
        k, s, p = self.kernel, self.stride, self.padding
        signal = signal.reshape(batch, n_out, ho * wo).transpose(1, 0, 2).reshape(n_out, -1)
        columns = (feedback.reshape(n_out, -1).T @ signal).reshape(c, k, k, batch, ho, wo)
        padded = np.zeros((c, batch, h + 2 * p, w + 2 * p))
        for i in range(k):
            for j in range(k):
                window = padded[:, :, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s]
                window += columns[:, i, j]
        result = padded[:, :, p : p + h, p : p + w].transpose(1, 0, 2, 3).reshape(batch, -1)
        return _into(result, out)

    def weight_gradient(self, delta: Array, xhat: Array) -> Array:
        """See :meth:`Operator.weight_gradient`."""
        delta = delta.reshape(len(delta), *self.target)
        blocks = self._blocks(len(delta))
        step, total = blocks.step, None
        for a in blocks:
            windows = self._windows(xhat[a : a + step])
            part = np.einsum("bohw,bchwij->ocij", delta[a : a + step], windows, optimize=True)
            total = part if total is None else total + part
        return np.zeros(self.weight_shape()) if total is None else total

    def bias_vector(self, bias: Array) -> Array:
        """See :meth:`Operator.bias_vector`."""
        return np.repeat(bias, self.target[1] * self.target[2])

    def bias_gradient(self, delta: Array) -> Array:
        """See :meth:`Operator.bias_gradient`."""
        return delta.reshape(len(delta), self.target[0], -1).sum(axis=(0, 2))


class MaxPoolOperator(Operator):
    """Max-pooling over ``p × p`` windows with stride ``p`` (no weights, no padding).

    :meth:`forward` stores the flat source index of every window's maximum (the first in
    row-major order on ties, as PyTorch); :meth:`backward` routes the signal to those indices.
    The operator therefore holds the state of the last sweep, one row per replica.
    """

    kind = "maxpool"

    def __init__(self, source, target, pool: int):
        self.source, self.target, self.pool = tuple(source), tuple(target), pool
        self.index: Array | None = None  # (batch, n_target) source index of each maximum

    def weight_shape(self) -> tuple[int, ...]:
        """See :meth:`Operator.weight_shape`."""
        return (0,)

    def forward(self, xhat: Array, weights: Array, out: Array | None = None) -> Array:
        """See :meth:`Operator.forward`."""
        c, h, w = self.source
        _, ho, wo = self.target
        p, batch = self.pool, len(xhat)
        flat_index = np.arange(c * h * w).reshape(c, h, w)[:, : ho * p, : wo * p]
        flat_index = flat_index.reshape(c, ho, p, wo, p).transpose(0, 1, 3, 2, 4)
        flat_index = flat_index.reshape(c * ho * wo, p * p)
        values = xhat[:, flat_index]  # (batch, n_target, p²)
        best = values.argmax(axis=2)
        self.index = flat_index[np.arange(c * ho * wo), best]
        return _into(np.take_along_axis(xhat, self.index, axis=1).reshape(batch, -1), out)

    def backward(self, signal: Array, feedback: Array, out: Array | None = None) -> Array:
        """See :meth:`Operator.backward`."""
        c, h, w = self.source
        routed = np.zeros((len(signal), c * h * w))
        np.put_along_axis(routed, self.index, signal, axis=1)
        return _into(routed, out)

    def weight_gradient(self, delta: Array, xhat: Array) -> Array:
        """See :meth:`Operator.weight_gradient`."""
        return np.zeros(0)

    def bias_vector(self, bias: Array) -> Array:
        """See :meth:`Operator.bias_vector`."""
        raise ValueError("a max-pooling connection has no bias")

    def bias_gradient(self, delta: Array) -> Array:
        """See :meth:`Operator.bias_gradient`."""
        raise ValueError("a max-pooling connection has no bias")


def _into(result: Array, out: Array | None) -> Array:
    """``result``, or ``out`` holding a copy of it when given."""
    if out is None:
        return result
    out[:] = result
    return out


def operator(model, connection) -> Operator:
    """The operator of ``connection`` (a ``ConnectionSpec`` of ``model``)."""
    source, target = model.layer(connection.source), model.layer(connection.target)
    if connection.operation == "conv":
        return ConvOperator(
            source.shape, target.shape, connection.kernel, connection.stride, connection.padding
        )
    if connection.operation == "maxpool":
        return MaxPoolOperator(source.shape, target.shape, connection.pool)
    return DenseOperator(source.size, target.size)


def build(model) -> list:
    """Fresh operators of every connection of ``model`` (``model.connections`` order)."""
    return [operator(model, connection) for connection in model.connections]


def pre_activation(model, ops: list, params, layer: int, activities: list) -> Array:
    """``a = Σ_{incoming c} W_c activities[source(c)] + b`` of ``layer`` (connection order)."""
    incoming = model.incoming(model.layers[layer].name)
    a = None
    for c in incoming:
        term = ops[c].forward(activities[model.index(model.connections[c].source)], params.W[c])
        a = term if a is None else a + term
    biased = next((c for c in incoming if params.b[c] is not None), None)
    if biased is not None:
        a = a + ops[biased].bias_vector(params.b[biased])
    return a
