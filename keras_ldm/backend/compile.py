"""`compile_function`: a function of tensors as one program of the running backend.

| backend    | the program                                      | a Keras model's variables                |
|------------|--------------------------------------------------|------------------------------------------|
| jax        | `jax.jit`                                        | arguments of the jitted function (read   |
|            |                                                  | through a `keras.StatelessScope`), never |
|            |                                                  | constants baked into the program         |
| tensorflow | `tf.function(jit_compile=True)` (XLA)            | captured by reference                    |
| torch      | an eager call under `torch.no_grad()`; the loop  | read as they are                         |
|            | calls the model recorded by `traced_call`        |                                          |

`keras_ldm.diffusion.loop` compiles the whole sampling loop with it. Everything that varies between calls —
the starting noise, the conditioning, the guidance scale, the seed, an inpainting mask — is a tensor
argument, so changing its value does not recompile.

Memory: nothing is donated here. The arguments are the weights (kept) and small per-call tensors, and
`generate()`'s program returns uint8 images, which no input buffer could hold; inside the program XLA
updates the latents of the loop in place. Training donates its state through Keras' JAX trainer.
jax, tensorflow and torch are imported inside their function, so keras_ldm imports without them.
"""

import keras

from keras_ldm.backend import for_backend


def compile_function(fn, model=None):
    """Compile `fn(*args)` into one program for the current backend (see the module docstring).

    Args:
        fn: a function of tensors (nested structures allowed) that may call `model`.
        model: what `fn` calls: a built Keras layer/model (on JAX its variables become arguments
            of the jitted function), any other callable, or None.

    Returns:
        The compiled function, with the same signature.

    Example:
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> double = compile_function(lambda x: 2 * layer(x), layer)
    >>> tuple(double(keras.ops.ones((4, 3))).shape)
    (4, 2)
    """
    is_layer = isinstance(model, keras.layers.Layer)
    if is_layer and not model.built:
        raise ValueError(
            f"`model` must be built before compiling a loop around it; received {model.name!r} (not built)."
        )
    compile_for_backend = for_backend(
        "sampling", jax=_jax_compile, tensorflow=_tensorflow_compile, torch=_torch_compile
    )
    return compile_for_backend(fn, list(model.variables) if is_layer else [])


def _jax_compile(fn, variables):
    import jax

    def stateless_fn(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(stateless_fn)
    return lambda *args: jitted([v.value for v in variables], *args)


def _tensorflow_compile(fn, variables):
    import tensorflow as tf

    return tf.function(fn, jit_compile=True)


def _torch_compile(fn, variables):
    import torch

    def no_grad_fn(*args):
        with torch.no_grad():
            return fn(*args)

    return no_grad_fn
