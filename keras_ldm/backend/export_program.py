"""The backend-specific part of `keras_ldm.export`: a `keras.ops` program as a TensorFlow function.

`ProgramBuilder(variables).program(fn, ...)` turns `fn(inputs, noise, seed, guidance_scale)` — Keras
code that reads Keras variables — into a function of TensorFlow tensors that a SavedModel can hold:

- TensorFlow: a `tf.function` (in which `fn` may call XLA-compiled functions, e.g. the sampling
  loop of `compile.compile_function`). It reads the model's own `tf.Variable`s;
  `tracked_variables()` lists those it reads.
- JAX: `jax2tf.convert` with native serialization (StableHLO for `platforms`, by default CPU and
  CUDA) and a symbolic batch size. The weights are arguments of the program (read through a
  `keras.StatelessScope`), fed from `tf.Variable` copies, so the SavedModel stores them once, as
  variables, and never as constants inside the program.

Both draw the initial noise exactly as `keras.random.normal(shape, seed=seed)` does on that backend,
so a served request with a seed reproduces `generate(seed=seed)`.
"""

import keras

SUPPORTED_BACKENDS = ("jax", "tensorflow")
DEFAULT_PLATFORMS = ("cpu", "cuda")


def check_backend():
    """The Keras backend's name, or a `ValueError` when export does not support it.

    Example:
    >>> SUPPORTED_BACKENDS
    ('jax', 'tensorflow')
    >>> backend = keras.backend.backend()
    >>> check_backend() == backend if backend in SUPPORTED_BACKENDS else True  # else: a ValueError
    True
    """
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"Exporting a SavedModel needs the Keras backend to be one of {list(SUPPORTED_BACKENDS)}; the "
            f"current backend is {backend!r}. Run with KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow "
            f"(presets and weights load on every backend)."
        )
    return backend


class ProgramBuilder:
    """Builds TensorFlow functions from `keras.ops` programs over one model's variables.

    Args:
        variables: the Keras variables the programs may read (e.g. `model.variables`); only those a
            program actually reads end up in the SavedModel. Their current values are exported
            (build and save inside `model.ema_scope()` to export the moving averages).
        platforms: JAX only: the platforms the serialized program is lowered for.

    Example (jax or tensorflow backend):
    >>> import tensorflow as tf
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> builder = ProgramBuilder(layer.weights)  # doctest: +SKIP
    >>> fn = lambda inputs, noise, seed, scale: layer(inputs["x"]) + noise
    >>> program = builder.program(fn, {"x": tf.TensorSpec([None, 3], tf.float32)}, (2,), "x")
    ... # doctest: +SKIP
    >>> tuple(program({"x": tf.ones([4, 3])}, tf.constant(1), tf.constant(1.0)).shape)  # doctest: +SKIP
    (4, 2)
    >>> len(builder.tracked_variables())  # the kernel and the bias  # doctest: +SKIP
    2
    """

    def __init__(self, variables, platforms=DEFAULT_PLATFORMS):
        self.backend = check_backend()
        self.variables = _unique(variables)
        self.platforms = tuple(platforms)
        self._tf_copies = {}  # JAX: id(keras variable) -> tf.Variable

    def program(self, fn, input_specs, noise_shape, batch_key):
        """`fn(inputs, noise, seed, guidance_scale) -> tensor` as `program(inputs, seed, guidance_scale)`.

        Args:
            fn: `keras.ops` code; `inputs` a dict of tensors with a leading batch axis of unknown
                size, `noise` the standard normal initial latents `(B, *noise_shape)`, `seed` an
                int32 scalar, `guidance_scale` a float32 scalar.
            input_specs: a dict of `tf.TensorSpec`s for `inputs` (batch axis None).
            noise_shape: the shape of one row of the initial noise.
            batch_key: the input whose leading axis is the batch.

        Returns:
            A function of TensorFlow tensors, to call inside a `tf.function`.
        """
        noise_shape = tuple(int(d) for d in noise_shape)
        if self.backend == "tensorflow":
            return self._tensorflow_program(fn, input_specs, noise_shape, batch_key)
        return self._jax_program(fn, input_specs, noise_shape, batch_key)

    def tracked_variables(self):
        """The `tf.Variable`s the programs built so far read: the SavedModel must track them."""
        if self.backend == "jax":
            return list(self._tf_copies.values())
        return [variable.value for variable in self._read]

    # -- TensorFlow ----------------------------------------------------------------------------

    def _tensorflow_program(self, fn, input_specs, noise_shape, batch_key):
        import tensorflow as tf

        specs = (
            dict(input_specs),
            tf.TensorSpec([None, *noise_shape], tf.float32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.float32),
        )
        concrete = tf.function(fn, autograph=False).get_concrete_function(*specs)
        read = {id(v) for v in concrete.variables}
        self.__dict__.setdefault("_read", [])
        for variable in self.variables:
            if id(variable.value) in read and all(variable is not v for v in self._read):
                self._read.append(variable)

        def program(inputs, seed, guidance_scale):
            batch = tf.shape(inputs[batch_key])[0]
            noise = tf.random.stateless_normal(
                tf.concat([[batch], noise_shape], 0), seed=_keras_tf_seed(seed), dtype=tf.float32
            )
            return concrete(inputs, noise, seed, guidance_scale)

        return program

    # -- JAX ----------------------------------------------------------------------------------------

    def _jax_program(self, fn, input_specs, noise_shape, batch_key):
        import jax
        import jax.numpy as jnp
        import tensorflow as tf
        from jax.experimental import jax2tf

        def with_noise(inputs, seed, guidance_scale):
            key = jnp.stack([jnp.asarray(seed).astype(jnp.uint32), jnp.zeros((), jnp.uint32)])
            batch = inputs[batch_key].shape[0]
            noise = jax.random.normal(key, (batch, *noise_shape), "float32")  # keras.random.normal
            return fn(inputs, noise, seed, guidance_scale)

        read = self._jax_read_variables(with_noise, input_specs)

        def stateless(values, inputs, seed, guidance_scale):
            with _StrictScope(list(zip(read, values))):
                return with_noise(inputs, seed, guidance_scale)

        polymorphic = {key: _polymorphic_shape(spec) for key, spec in input_specs.items()}
        converted = jax2tf.convert(
            stateless,
            polymorphic_shapes=[None, polymorphic, None, None],
            native_serialization_platforms=self.platforms,
            with_gradient=False,
        )
        for variable in read:
            if id(variable) not in self._tf_copies:
                value = keras.ops.convert_to_numpy(variable.value)
                self._tf_copies[id(variable)] = tf.Variable(value, trainable=False, name=_tf_name(variable))
        values = [self._tf_copies[id(variable)] for variable in read]

        def program(inputs, seed, guidance_scale):
            return converted(values, dict(inputs), seed, guidance_scale)

        return program

    def _jax_read_variables(self, fn, input_specs):
        """The variables `fn` reads, in a fixed order (found by an abstract trace at batch size 1)."""
        import jax

        def example(spec):
            return jax.ShapeDtypeStruct((1, *spec.shape[1:]), spec.dtype.as_numpy_dtype)

        scope = _RecordingScope([(v, v.value) for v in self.variables])

        def traced(inputs, seed, guidance_scale):
            with scope:
                return fn(inputs, seed, guidance_scale)

        jax.eval_shape(
            traced,
            {key: example(spec) for key, spec in input_specs.items()},
            jax.ShapeDtypeStruct((), "int32"),
            jax.ShapeDtypeStruct((), "float32"),
        )
        return [v for v in self.variables if id(v) in scope.read]


def _keras_tf_seed(seed):
    """The int32 `[seed, 0]` that `keras.random.normal(..., seed=int)` hands to TensorFlow."""
    import tensorflow as tf

    seed = tf.math.floormod(tf.cast(seed, tf.int64), tf.int32.max - 1)
    return tf.cast(tf.stack([seed, tf.constant(0, tf.int64)]), tf.int32)


def _polymorphic_shape(spec):
    return "(b, " + ", ".join("_" for _ in spec.shape[1:]) + ")" if spec.shape.rank > 1 else "(b,)"


def _tf_name(variable):
    return variable.path.replace("/", "_").replace(":", "_")


def _unique(variables):
    seen, unique = set(), []
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            unique.append(variable)
    return unique


class _RecordingScope(keras.StatelessScope):
    """A `StatelessScope` that records which variables are read."""

    def __init__(self, state_mapping):
        super().__init__(state_mapping=state_mapping)
        self.read = set()

    def get_current_value(self, variable):
        self.read.add(id(variable))
        return super().get_current_value(variable)


class _StrictScope(keras.StatelessScope):
    """A `StatelessScope` in which reading a variable it does not map is an error: an unmapped read
    would bake the weight into the program as a constant (a second copy of it in the SavedModel)."""

    def get_current_value(self, variable):
        value = super().get_current_value(variable)
        if value is None:
            raise RuntimeError(
                f"The exported program read the variable {variable.path!r}, which the abstract trace "
                f"did not see; it would be saved as a constant."
            )
        return value
