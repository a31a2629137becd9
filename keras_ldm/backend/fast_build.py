"""Building a model whose weights are loaded right after, without running its initializers on the backend.

On JAX every random initializer compiles an XLA program for each new variable shape: loading the shipped
`shapes_t2i` preset took 23.7 s on a 2-core CPU, 21.7 s of it in 114 such compiles, all to draw values the
weights file then replaces; constant initializers (zeros, ones, `Constant`) compile too. Inside
`random_init_skipped()` variables with a random initializer start as zeros and those with a constant one get
their constant, both made with numpy; any other initializer (the moving averages' copies) runs as usual.

Keras has no public switch for this: the module uses `keras.StatelessScope(initialize_variables=False)`
(public) and then Keras' list of deferred variables and their `_initializer` (private). Where those are
missing (another Keras version), models are built the ordinary way: slower, never wrong. The same code runs
on every backend (it imports none of them); it pays off most on JAX, and `keras_ldm.presets` and
`keras_ldm.convert` build every model they load inside it.
"""

import contextlib

import keras
import numpy as np

RANDOM_INITIALIZERS = (
    keras.initializers.RandomNormal,
    keras.initializers.RandomUniform,
    keras.initializers.TruncatedNormal,
    keras.initializers.VarianceScaling,  # Glorot, He and LeCun too
    keras.initializers.Orthogonal,
)
CONSTANT_INITIALIZERS = (keras.initializers.Zeros, keras.initializers.Ones, keras.initializers.Constant)


@contextlib.contextmanager
def random_init_skipped():
    """Variables created inside start as zeros where their initializer is random (constants: numpy-made).

    Only for models whose every randomly initialized weight is assigned next: a preset's weights file or
    a converted checkpoint (the loaders check that each weight is present). Inside an outer
    `keras.StatelessScope` it changes nothing.

    Example:
    >>> with random_init_skipped():
    ...     layer = keras.layers.Dense(3, bias_initializer="ones")
    ...     layer.build((None, 2))
    >>> keras.ops.convert_to_numpy(layer.kernel).tolist(), keras.ops.convert_to_numpy(layer.bias).tolist()
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [1.0, 1.0, 1.0])
    """
    deferred = _deferred_variables()
    if deferred is None or _in_stateless_scope():
        yield
        return
    earlier = list(deferred())
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
        created = deferred()[len(earlier) :]
    finally:  # on an error too: no half-built model's variables left for Keras to initialize later
        _set_deferred_variables(earlier)
    for variable in created:
        variable._initializer = _numpy_initializer(variable._initializer)
        variable._deferred_initialize()


def _numpy_initializer(initializer):
    """The same values without a backend program: zeros for a random initializer, the constant for a
    constant one; any other initializer as it is."""
    if isinstance(initializer, RANDOM_INITIALIZERS):
        value = 0.0
    elif isinstance(initializer, keras.initializers.Constant):
        value = initializer.value
    elif isinstance(initializer, CONSTANT_INITIALIZERS):
        value = 1.0 if isinstance(initializer, keras.initializers.Ones) else 0.0
    else:
        return initializer

    def numpy_values(shape, dtype=None):
        dtype = keras.backend.standardize_dtype(dtype or "float32")
        return np.broadcast_to(np.asarray(value, dtype), shape).copy()

    return numpy_values


def _deferred_variables():
    """`() -> list` of the variables Keras has yet to initialize, or None where this Keras lacks the list."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:
        return None
    if not hasattr(keras.Variable, "_deferred_initialize"):
        return None
    return lambda: global_state.get_global_attribute("uninitialized_variables", [], set_to_default=True)


def _set_deferred_variables(variables):
    from keras.src.backend.common import global_state

    global_state.set_global_attribute("uninitialized_variables", variables)


def _in_stateless_scope():
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    return in_stateless_scope()
