"""A `keras.random.SeedGenerator` whose state is saved with its model.

Keras saves a layer's weights but not the state of its seed generators, so a training run resumed
from a checkpoint would draw different timesteps and noise. Here the generator's state is an
ordinary non-trainable weight of the owning layer: saved, restored, and carried through JAX's
stateless train step like any other weight.
"""

import keras


def saved_seed_generator(owner, seed=None, name="seed_generator_state"):
    """A SeedGenerator drawing from a non-trainable weight of `owner` (a layer or model).

    Example:
    >>> owner = keras.layers.Layer()
    >>> generator = saved_seed_generator(owner, seed=3)
    >>> _ = keras.random.normal((2,), seed=generator)
    >>> [v.name for v in owner.weights]
    ['seed_generator_state']
    """
    generator = keras.random.SeedGenerator(seed)
    initial = keras.ops.convert_to_numpy(generator.state)
    state = owner.add_weight(
        shape=(2,),
        dtype=generator.state.dtype,
        initializer=lambda shape, dtype=None: keras.ops.convert_to_tensor(
            initial, dtype=generator.state.dtype
        ),
        trainable=False,
        name=name,
    )
    generator.state = state
    return generator
