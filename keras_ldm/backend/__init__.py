"""Everything that differs between JAX, TensorFlow and PyTorch: the only modules of keras_ldm that import them.

One module per concern; inside it, one function per backend (`_jax_...`, `_tensorflow_...`, `_torch_...`)
beside the public function that picks one by `keras.backend.backend()`. The backend-independent logic calls
them from its own package: the sampling loop (`keras_ldm.diffusion.loop`) compiles with `compile` and
draws from `noise`, the EMA maths (`keras_ldm.training.ema`) is applied by `ema`, the autoencoder trainer
differentiates with `gradients`, the models record themselves with `traced_call`.

| concern                   | jax                        | tensorflow                   | torch                          |
|---------------------------|----------------------------|------------------------------|--------------------------------|
| `compile`: one program    | `jax.jit`, variables as    | `tf.function(jit_compile=    | eager under `torch.no_grad()`  |
| (`compile_function`)      | arguments                  | True)`                       |                                |
| `noise`: stateless draws  | `jax.random` keys folded   | Philox bits + Box–Muller     | `torch.Generator` per draw     |
| (`make_noise_sampler`)    | with the step              | (equal eagerly and in XLA)   |                                |
| `traced_call`: models     | the call unchanged         | the call unchanged           | `torch.jit.trace` once per     |
| recorded once per shape   |                            |                              | input signature                |
| `torch_kernels`: conv and | — (Keras' ops)             | — (Keras' ops)               | `F.conv2d` / `F.group_norm` on |
| GroupNorm, channels-last  |                            |                              | NCHW views, no layout copies   |
| `ema`: the EMA train step | averages from the pure     | the step, then assignment    | the step, then assignment      |
|                           | step's returned state      |                              |                                |
| `gradients`: value and    | `jax.value_and_grad` of a  | `tf.GradientTape`, dense     | `torch.autograd.grad`;         |
| gradients, optimizer step | pure function; JAX state   | gradients                    | `optimizer.apply` under        |
|                           | mapped onto the variables  |                              | `torch.no_grad()`              |
| `distribution`: a        | the loss (a global mean    | the loss / replicas of the   | the loss                       |
| replica's loss            | under `DataParallel`)      | `tf.distribute` strategy     |                                |
| `fast_build`: no random   | numpy-made initial values  | the same                     | the same                       |
| init before loading       | (saves XLA compiles)       |                              |                                |

Libraries used on every backend, not as the Keras backend:

| concern                                | what                                                                    |
|----------------------------------------|-------------------------------------------------------------------------|
| `lazy_tensorflow`: `tf`, imported on   | `tf.data` pipelines (`keras_ldm.data`) and TensorBoard summaries        |
| first use                              | (`keras_ldm.training.callbacks`): they read `tf` from here, so keras_ldm |
|                                        | imports and generates on a host without TensorFlow                      |
| `torch_checkpoint`: `torch.load`       | CompVis `.ckpt` pickles as numpy arrays (`keras_ldm.convert.compvis`)   |

| `export_program`: a `keras.ops` program | JAX: `jax2tf.convert` (native serialization, weights as arguments);    |
| as a TensorFlow function for a         | TensorFlow: `tf.function`. Used by `keras_ldm.export`                   |
| SavedModel                             |                                                                         |

Nothing here imports jax, tensorflow or torch at module level except `torch_kernels`, which only the torch
branches of `keras_ldm.layers` import. Outside this package only the SavedModel's TensorFlow graph is built
with TensorFlow directly: `keras_ldm.export` (the `tf.Module` and its serving signature) and
`keras_ldm.export_tokenizer` (prompts to token ids in core TensorFlow ops). They use TensorFlow as the
serving format, not as the Keras backend, and run the same under every backend, so they stay beside the
export they make.
`tests/test_structure.py` checks that no other module imports them.
"""

import keras


def for_backend(purpose, jax, tensorflow, torch):
    """The one of `jax`, `tensorflow`, `torch` that serves the running Keras backend.

    Args:
        purpose: what it is for, named in the error on another backend (e.g. `"sampling"`).
        jax, tensorflow, torch: what each backend uses (typically its function).

    Example:
    >>> for_backend("a test", jax="J", tensorflow="T", torch="P") in ("J", "T", "P")
    True
    """
    backend = keras.backend.backend()
    chosen = {"jax": jax, "tensorflow": tensorflow, "torch": torch}
    if backend not in chosen:
        raise ValueError(
            f"Unsupported Keras backend {backend!r} for {purpose}; use 'jax', 'tensorflow' or 'torch'."
        )
    return chosen[backend]
