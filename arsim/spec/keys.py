"""What every key of a model, protocol and sweep file means.

The readers (:func:`arsim.spec.model_from_dict`, :func:`arsim.spec.protocol_from_dict`,
:func:`arsim.sweep.load_sweep`) define each key's type, unit, default and allowed values; these
tables add its meaning. :mod:`arsim.docgen` joins the two into the key reference of the
documentation, and ``tests/test_docs.py`` fails when a key the readers accept has no entry here.

Keys are dotted paths as they appear in error messages; ``[]`` stands for any index of an array
of tables (``layers[].size``) and ``<name>`` for a key the user chooses (a layer's name).
"""

from __future__ import annotations

MODEL_KEYS: dict[str, str] = {
    "name": "Model name (default: the file's stem); it names the run folder.",
    "seed": "Seed of every random draw (weights, ψ, data) unless `--seed` overrides it.",
    "loss": "Loss at the output layer: `mse` or `cross-entropy` (softmax output).",
    "loss_scale": "Factor on the loss: the MSE of a sample is `loss_scale × ½ Σ (x̂_L − T)²` and "
    "the output is clamped to `loss_scale × (x̂_L − T)`; 2 reproduces the paper's `Σ (x̂_L − T)²`.",
    "init": "Initialisation of the weights and biases.",
    "init.variance": "Variance of the normal distribution of every weight (and of a fixed ψ).",
    "init.mean": "Mean of the normal distribution of the weights.",
    "init.bias": "Initial value of every bias.",
    "init.distribution": "Distribution of the initial weights (only `normal`).",
    "memory": "How hidden layers keep x̂ and f' from the sweep through the relaxation.",
    "memory.kind": "`ideal`: held exactly; `trace`: decaying eligibility traces "
    "`dx̂/dt = −x̂/τ_m`; `two-compartment`: the soma holds x̂, coupled to the relaxing apical "
    "compartment by `dx̂/dt = (x − x̂)/τ_m`.",
    "memory.tau": "τ_m of the `trace` and `two-compartment` memories (required for them).",
    "defaults": "Settings of every connection that does not set them itself.",
    "defaults.bias": "Whether connections carry a bias into their target.",
    "defaults.feedback": "Feedback path: `transpose` (exact AR, B = Wᵀ), `fixed` (feedback "
    "alignment, random ψ) or `learned` (Hebbian ψ).",
    "defaults.derivative": "Whether the relaxation multiplies the top-down signal by f'.",
    "defaults.derivative_at": "Where f' is evaluated: `stored` (the sweep's pre-activation), "
    "`current` (from the current relaxing activities below) or `upper` (the upper layer's own "
    "current activity).",
    "defaults.update_uses": "Presynaptic factor of the weight update: `stored` x̂ or `current` "
    "relaxed activity.",
    "defaults.update_derivative_at": "Where the weight update's f' is evaluated: `stored` (the "
    "sweep's pre-activation), `current` (the pre-activation from the current relaxed activities "
    "below; the follow-up paper's `use_fderiv_weight_update`) or `upper` (the upper layer's own "
    "current activity; `xnext_fderiv_weights`).",
    "layers": "The layers (`[[layers]]`), at least an input and an output; a chain in "
    "declaration order unless `[[connections]]` are given.",
    "layers[].name": "Layer name: letters, digits and `_`, starting with a letter.",
    "layers[].size": "Number of neurons (required unless `shape` is given; then their product).",
    "layers[].shape": "`[channels, height, width]` of a layer that convolutions or poolings "
    "read or write; activities are flattened channel, row, column.",
    "layers[].activation": "Activation f: `linear`, `relu`, `tanh`, `sigmoid`, … or `softmax` "
    "(output only, with the cross-entropy loss).",
    "layers[].equations": "Extra state variables of a hidden layer in Brian2's syntax (e.g. "
    '`"dadapt/dt = (0.3*x - adapt) / (40*ms) : 1"`); a model file with equations is code.',
    "layers[].drive": "A term added to a hidden layer's relaxation, "
    '`τ dx/dt = −x + fb + drive` (a dimensionless Brian2 expression, e.g. `"-adapt"`).',
    "connections": "The edges of the graph (`[[connections]]`), each with its own W.",
    "connections[].source": "Presynaptic (lower) layer of the edge.",
    "connections[].target": "Postsynaptic (upper) layer of the edge.",
    "connections[].operation": "`dense` (a full matrix), `conv` (shared kernel) or `maxpool`.",
    "connections[].bias": "Whether this edge carries the target's bias (at most one edge per "
    "layer does).",
    "connections[].feedback": "This edge's feedback path (see `defaults.feedback`).",
    "connections[].derivative": "Whether this edge's top-down signal is multiplied by f'.",
    "connections[].derivative_at": "Where this edge's f' is evaluated (see "
    "`defaults.derivative_at`).",
    "connections[].update_uses": "This edge's presynaptic update factor (see "
    "`defaults.update_uses`).",
    "connections[].update_derivative_at": "Where this edge's weight update evaluates f' (see "
    "`defaults.update_derivative_at`).",
    "connections[].shape": "Optional check of W's shape, `[target size, source size]`.",
    "connections[].kernel": "Side of a convolution's square kernel (required for `conv`).",
    "connections[].stride": "Stride of a convolution.",
    "connections[].padding": "Zero padding of a convolution on every side.",
    "connections[].pool": "Window and stride of a max-pooling (required for `maxpool`).",
}
"""Meaning of every key of a model file."""

PROTOCOL_KEYS: dict[str, str] = {
    "name": "Protocol name (default: the file's stem); it names the run folder.",
    "tau": "τ of the leaky-integrator neurons; the relaxation rate `η_x = dt/τ` is derived.",
    "dt": "Forward Euler step (below 2 τ); absent when `oscillation.steps_per_cycle` sets it.",
    "precision": "Floating point of the simulation: `double` (float64, default) or `single` "
    "(float32 NeuronGroups, matrices and BLAS in the dense mode; the synapses modes refuse; "
    "`--precision` overrides).",
    "noise": "σ of additive white noise on the relaxation, `τ dx/dt = −x + fb + σ √τ ξ` "
    "(activity units), drawn from the run's seed.",
    "layer_tau": "Time constants of particular layers, overriding `tau`.",
    "layer_tau.<layer>": "τ of that layer (above dt/2).",
    "feedback_delay": "Transmission delays of the top-down signal of particular connections "
    "(dense mode).",
    "feedback_delay.<source-target>": "Delay of that connection's top-down signal, a multiple "
    "of dt: the source receives the target's signal as it was that long ago.",
    "phases": "Durations of the three phases of a sample (absent with an `[oscillation]`).",
    "phases.feedforward": "Feedforward phase: activities hold after the sweep.",
    "phases.relaxation": "Relaxation phase (required): hidden layers relax toward the "
    "top-down input; cut it short to study truncated relaxation.",
    "phases.update": "Update phase: activities hold until the plasticity at the next tick.",
    "phases.start": "Where hidden activities start the relaxation: `feedforward` (x̂) or "
    "`zero` (at rest).",
    "phases.tolerance": "Relaxation until converged (dense mode): a sample stops relaxing once "
    "every hidden `|−x + fb|` is below it; 0 relaxes for the whole phase.",
    "phases.jitter": "Largest per-minibatch shift of the boundary between the feedforward and "
    "relaxation phases (dense mode): each minibatch draws whole steps uniformly from "
    "[−jitter, +jitter] from the run's seed; the sample period and a plasticity window stay put.",
    "stimulus": "A stimulus stream on its own clock (dense mode).",
    "stimulus.dwell": "How long each stimulus is shown, whatever the phase; 0 shows one "
    "stimulus per sample period.",
    "learning": "Learning rates and minibatches.",
    "learning.rate": "η of the forward weights and biases.",
    "learning.feedback_rate": "η of a learned ψ (default: `rate`).",
    "learning.batch_size": "Samples whose weight changes accumulate before they are applied.",
    "learning.batch_reduction": "`sum` or `mean` of the per-sample changes of a minibatch.",
    "record": "What goes into the run folder's `traces/` (one Parquet file per layer and "
    "variable).",
    "record.dtype": "Float type of the stored values: `float64`, `float32` (half the memory, "
    'disk and time) or `auto`, the simulation\'s (float32 under `precision = "single"`).',
    "record.variables": "Neuron variables: `x`, `xhat`, `fp`, `delta`, `fb`, the variables "
    "that the recorded layers declare in their `equations` (such as `adapt`); `spikes` (with "
    "`[spikes]`): the spike trains, `traces/spikes-<layer>.parquet`.",
    "record.layers": "Layer names, or `all`.",
    "record.neurons": "Neuron indices recorded in every layer, or `all`.",
    "record.samples": "Sample indices whose rows are kept, or `all`.",
    "record.interval": "Sampling interval, a multiple of dt (default: every step).",
    "record.phases": "Phases whose rows are kept.",
    "record.minibatches": "Minibatch indices whose samples are kept, or `all` (a sample is "
    "kept when both `samples` and `minibatches` allow it).",
    "record.epochs": "Training only: the epochs (0-based) to record, or `all`; without it "
    "training records nothing.",
    "record.summary": "Also store per layer and step the mean and standard deviation over all "
    "of the layer's neurons of every recorded variable, and the relative distance of x to the "
    "backprop gradient (`arsim.traces.load_summary`).",
    "oscillation": "An oscillation whose cycle is the sample period and whose phase gates the "
    "sweep, the relaxation and the plasticity (replaces the `[phases]` durations).",
    "oscillation.frequency": "Cycles per second; the period 1/f is a whole number of steps.",
    "oscillation.steps_per_cycle": "Steps of one cycle, given instead of `dt` (then "
    "dt = 1/(f · steps_per_cycle)): a period that is no whole number of milliseconds, such as "
    "12 Hz's 83.33… ms, in 250 steps of 1/3 ms.",
    "oscillation.waveform": "`square` (the window fully open) or `sine` (a half sine across "
    "the window gates the relaxation rate).",
    "oscillation.relaxation": "`[start, end]` phase angles (`deg` or `rad`) of the relaxation "
    "window, after the sweep's step and within one cycle.",
    "oscillation.plasticity": "Phase angle at which the weights change; 360 deg is the cycle's "
    "end.",
    "oscillation.phase_offset": "Lags of particular layers' windows (e.g. a travelling wave).",
    "oscillation.phase_offset.<layer>": "Lag of that layer's windows, a phase angle.",
    "oscillation.feedforward": "`[start, end]` phase angles of the forward window of leaky "
    "forward dynamics (default: from 0 deg until the earliest relaxation window).",
    "feedforward": "How the feedforward pass unfolds in time.",
    "feedforward.kind": "`instant`: the sweep within one step, x̂ and f' held; `leaky`: every "
    "non-input layer integrates `τ_f dx̂/dt = −x̂ + f(a)` during the feedforward phase.",
    "feedforward.tau": "τ_f of the leaky forward dynamics (required for `leaky`).",
    "feedforward.layer_tau": "τ_f of particular layers.",
    "feedforward.layer_tau.<layer>": "τ_f of that layer (above dt/2).",
    "feedforward.reset": "Each sample starts from rest; `false` carries the state over.",
    "feedforward.relaxation_onset": "Time from the presentation at which the relaxation "
    "starts (default: the end of the feedforward phase); before then it reads x̂ and f' as "
    "they are.",
    "feedforward.layer_onset": "Relaxation onsets of particular layers.",
    "feedforward.layer_onset.<layer>": "Relaxation onset of that layer, from the presentation.",
    "feedforward.error_tau": "τ_e of an output error unit, `τ_e dx/dt = −x + ∂L/∂x̂`; 0 clamps "
    "the output.",
    "relaxation": "How a relaxation step updates the layers.",
    "relaxation.order": "`parallel` (default): every layer from the previous step's "
    "activities; `top-down`: the layers one after the other from the output down, each reading "
    "the activity the layer above got in the same step (the follow-up paper's sequential loop).",
    "relaxation.input": "`clamped` (default): the input layers' x is the stimulus; `relaxes`: it "
    "starts at the stimulus and relaxes with its top-down input like a hidden layer (the "
    "stimulus stays in x̂), so `update_uses = 'current'` reads the relaxed input.",
    "spikes": "Signals that travel between layers as spikes (the table's presence turns them "
    "on; an empty table takes every default).",
    "spikes.signals": "`['feedback']` (default): the top-down signal δ = x ⊙ f' a layer sends "
    "down during the relaxation travels as spikes.",
    "spikes.encoder": "`poisson` (default): each ON/OFF channel spikes with probability "
    "`rate·dt` per step; `integrate-and-fire`: it integrates its rate and spikes at 1, keeping "
    "the remainder; `rate`: no spikes, the clipped signal through the same synaptic filter "
    "(the limit of both).",
    "spikes.max_rate": "Rate of a channel whose signal is `scale` (default `300 Hz`); "
    "`max_rate · dt ≤ 1`.",
    "spikes.scale": "The activity that maps to `max_rate` (default 1); a larger one saturates.",
    "spikes.layer_scale": "`scale` of particular sending layers.",
    "spikes.layer_scale.<layer>": "The activity of that layer's signal that maps to `max_rate`.",
    "spikes.synapse_tau": "τ_s of the receiving synaptic filter, `τ_s dŝ/dt = −ŝ + "
    "(scale/max_rate) Σ ±δ(t − t_k)` (default `5 ms`, above dt/2).",
    "spikes.population": "Encoders per unit whose received signals are averaged (default 1; "
    "the Poisson noise falls as 1/√N).",
    "plasticity": "When the weights change.",
    "plasticity.continuous": "The weights change at every relaxation step of `window` by η/K "
    "of the rule instead of once after the relaxation.",
    "plasticity.window": "`[start, end]` durations from the relaxation's start (default: the "
    "whole relaxation).",
}
"""Meaning of every key of a protocol file."""

SWEEP_KEYS: dict[str, str] = {
    "model": "The model file, relative to the sweep file (required).",
    "protocol": "The protocol file, relative to the sweep file (required).",
    "seeds": "Seeds of every grid point, distinct non-negative integers (default: the model's).",
    "name": "Sweep name (default: the file's stem): Unicode letters, digits and `._-`.",
    "grid": "The parameters to vary: dotted keys into the model and protocol tables.",
    "grid.<key>": "A non-empty list of distinct values for `model.KEY` or `protocol.KEY` (a "
    "whole table is a value too; `[[arrays of tables]]` take an index, `model.layers[1].size`).",
    "run": "How each point runs: on seeded random data (like `arsim run`) or training.",
    "run.samples": "Random samples of a random-data run (`--samples`).",
    "run.mode": "Execution mode of a random-data run: `dense` or `synapses`.",
    "run.device": "Brian2 device of a random-data run: `runtime` or `cpp_standalone`.",
    "run.target": "Code generation of the neurons: `auto`, `numpy` or `cython`.",
    "run.data": "Dataset to train on (`fashion-mnist` or `mnist`); absent: random data.",
    "run.data-dir": "Folder of the dataset, relative to the sweep file.",
    "run.epochs": "Training epochs.",
    "run.train-samples": "Train on the first N training images (default: all).",
    "run.metrics-every": "A `kind = batch` row of `metrics.csv` every N minibatches.",
    "run.compare-every": "Compare AR's update with backprop on every K-th minibatch (default 10).",
    "run.baseline": "`backprop`: train a backprop baseline alongside; `none`: do not.",
    "run.timeout": "Seconds a point may take before it counts as failed (default: no limit).",
}
"""Meaning of every key of a sweep file."""
