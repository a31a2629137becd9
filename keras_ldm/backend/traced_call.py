"""`traced_call`: a Keras layer's forward pass recorded once per input signature on PyTorch.

| backend          | `traced_call(layer, call)`                                                     |
|------------------|--------------------------------------------------------------------------------|
| jax, tensorflow  | `call` unchanged: both compile whole programs (`keras_ldm.backend.compile`)    |
| torch            | `_TorchTracedCall`: one `torch.jit.trace` recording per input signature        |

On the torch backend a Keras layer's Python (layer calls, `keras.ops` dispatch) costs more than its
kernels at small and medium sizes: 168 layer calls and about 980 `keras.ops` calls per forward of the
`--small` benchmark UNet take 47 ms, its kernels 15 ms. `torch.jit.trace` records the kernels once and
replays them without that Python. torch is imported lazily.
"""

import keras
from keras import tree

try:  # Keras-private, no public equivalent: reads variables uncast inside a mixed-precision layer call
    from keras.src.backend import AutocastScope
except ImportError:  # then nothing is recorded
    AutocastScope = None

_CONSTANT_TYPES = (type(None), bool, int, float, str)  # arguments a recording keeps as they were


def traced_call(layer, call=None, eager_calls=0):
    """`call` (default: `layer` itself), made cheap to repeat: for the models every step calls again.

    On PyTorch the returned callable records `call` once per input signature (tensor shapes, dtypes and
    devices, other arguments by value, whether gradients are on) with `torch.jit.trace` and replays the
    recorded kernels (measured on the `--small` benchmark UNet, 1 CPU thread: forward 47 -> 15 ms,
    forward + backward 81 -> 31 ms). The layer's stored variable values are arguments of the recording,
    so new weights are used and gradients reach them; the layer casts them itself, as it does eagerly.

    It calls as usual (no recording) where a recording would be wrong or cannot be made:
    - a call that updates state, e.g. draws from a `SeedGenerator` (seeded dropout in training): a
      recording would repeat the same draw. (Unseeded Keras dropout draws from PyTorch's global
      generator; recorded, it draws anew on each call, as eagerly.)
    - gradients on and `layer.gradient_checkpointing` set: a recording would keep every activation;
    - inputs other than torch tensors and Python constants (e.g. numpy arrays);
    - `torch.jit.trace` failing (with a warning).

    On JAX and TensorFlow it returns `call`.

    Args:
        layer: a built Keras layer whose variables `call` reads.
        call: what to record, a function of tensors returning a tensor or a tuple/list/dict of them
            (default: `layer`), e.g. a method of `layer`. Its Python may depend on shapes, not on
            tensor values. Pass `training` to it explicitly: a recording does not see the flag Keras
            hands down from an enclosing layer call.
        eager_calls: calls of a signature that run eagerly before it is recorded. Recording costs
            about 20 eager calls: 0 suits a UNet called every sampling or training step, 1 a decoder
            that `generate()` calls once (recorded when `generate()` repeats).

    Returns:
        A callable with the signature of `call` (on PyTorch, `layer`'s attributes read through).

    Example:
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> forward = traced_call(layer)
    >>> tuple(forward(keras.ops.ones((4, 3))).shape)
    (4, 2)
    """
    call = layer if call is None else call
    if keras.backend.backend() != "torch" or AutocastScope is None:
        return call
    return _TorchTracedCall(layer, call, eager_calls)


def kept_traced_call(owner, name, layer, call=None, eager_calls=0):
    """`traced_call(layer, call, eager_calls)` kept in `owner` under `name`, so its recordings are
    reused by later calls; made anew when `layer` is no longer the one it records (e.g. a replaced UNet).

    Example:
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> kept_traced_call(layer, "forward", layer) is kept_traced_call(layer, "forward", layer)
    True
    """
    kept = owner.__dict__.setdefault("_traced_calls", {})
    if getattr(kept.get(name), "layer", None) is not layer:
        kept[name] = traced_call(layer, call, eager_calls)
    return kept[name]


class _StateUpdated(Exception):
    """The traced call assigned a variable (a random draw, a statistic): not recordable."""


class _TorchTracedCall:
    """`traced_call` on PyTorch: one `torch.jit.trace` recording per input signature."""

    def __init__(self, layer, call, eager_calls):
        self.layer, self.call, self.eager_calls = layer, call, eager_calls
        self.recordings = {}  # signature -> recording, or None where it is not recordable
        self.calls = {}  # signature -> eager calls so far
        self.variables = None  # the layer's, listed at the first recording (when it is built)

    def __call__(self, *args, **kwargs):
        import torch

        leaves = tree.flatten((args, kwargs))
        is_tensor = [isinstance(leaf, torch.Tensor) for leaf in leaves]
        gradients = torch.is_grad_enabled()
        recordable = all(
            tensor or isinstance(leaf, _CONSTANT_TYPES) for leaf, tensor in zip(leaves, is_tensor)
        )
        if gradients and getattr(self.layer, "gradient_checkpointing", False):
            recordable = False
        structure = tree.map_structure(lambda _: None, (args, kwargs))
        key = (
            repr(structure),
            gradients,
            tuple(_describe(leaf, tensor) for leaf, tensor in zip(leaves, is_tensor)),
        )
        if not (recordable and self._ready(key)):
            return self.call(*args, **kwargs)
        self.variables = self.variables or list(self.layer.variables)
        with AutocastScope(None):  # stored values, not cast copies: the layer casts them, as eagerly
            values = [variable.value for variable in self.variables]
        tensors = [leaf for leaf, tensor in zip(leaves, is_tensor) if tensor]
        if key not in self.recordings:
            constants = [None if tensor else leaf for leaf, tensor in zip(leaves, is_tensor)]
            self.recordings[key] = self._record(structure, constants, is_tensor, values, tensors)
        recording = self.recordings[key]
        if recording is None:
            return self.call(*args, **kwargs)
        with torch.jit.optimized_execution(False):  # no profiling runs: fast from the first call
            return recording(*values, *tensors)

    def __getattr__(self, name):  # what a caller reads off the layer (its config, sublayers)
        if name == "layer":  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self.layer, name)

    def _ready(self, key):
        """Whether `key` is recorded or has had its `eager_calls`: counts the eager calls."""
        if key in self.recordings:
            return True
        self.calls[key] = self.calls.get(key, 0) + 1
        return self.calls[key] > self.eager_calls

    def _record(self, structure, constants, is_tensor, values, tensors):
        """`torch.jit.trace` of `call` for one signature: `recording(*values, *tensors)`, or None."""
        import warnings

        import torch

        variables, count = self.variables, len(values)

        def forward(*flat):  # one flat argument list: torch.jit.trace refuses empty lists
            values, tensors = flat[:count], flat[count:]
            filled, remaining = list(constants), iter(tensors)
            for i, tensor in enumerate(is_tensor):
                if tensor:
                    filled[i] = next(remaining)
            call_args, call_kwargs = tree.pack_sequence_as(structure, filled)
            with AutocastScope(None):  # the scope would cast the values to an enclosing call's dtype
                scope = keras.StatelessScope(state_mapping=list(zip(variables, values)))
            with scope:
                before = dict(scope.state_mapping)
                outputs = self.call(*call_args, **call_kwargs)
                if scope.state_mapping.keys() != before.keys() or any(
                    scope.state_mapping[key] is not value for key, value in before.items()
                ):
                    raise _StateUpdated  # any variable assigned, the layer's or another (a global seed)
            return outputs

        try:
            with warnings.catch_warnings():
                # Deprecation notice, and shape checks in Python: fixed for one input signature.
                warnings.simplefilter("ignore")
                return torch.jit.trace(forward, (*values, *tensors), check_trace=False, strict=False)
        except _StateUpdated:
            return None
        except Exception as error:  # noqa: BLE001 - any failure to record falls back to plain calls
            warnings.warn(
                f"Could not record {self.layer.name!r} with torch.jit.trace ({type(error).__name__}: "
                f"{error}); calling it eagerly instead.",
                stacklevel=3,
            )
            return None


def _describe(leaf, is_tensor):
    return (tuple(leaf.shape), leaf.dtype, leaf.device) if is_tensor else repr(leaf)
