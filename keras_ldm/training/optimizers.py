"""`OptimizerPair`: the generator's and the discriminator's optimizers behind one `model.optimizer`.

Keras keeps one optimizer per model (its JAX trainer threads exactly `model.optimizer.variables`
through the compiled step, and saving stores `model.optimizer`); the pair exposes the variables of
both, so both optimizers' state is trained, saved and restored on every backend.
"""

import keras


def default_optimizer():
    """Adam(1e-4, beta_1=0.5, beta_2=0.9): CompVis' betas with a small-data learning rate."""
    return keras.optimizers.Adam(learning_rate=1e-4, beta_1=0.5, beta_2=0.9)


@keras.saving.register_keras_serializable(package="keras_ldm")
class OptimizerPair(keras.optimizers.Optimizer):
    """Two optimizers: `generator` for the autoencoder (and `logvar`), `discriminator` for the critic.

    Build it with `build(generator_variables, discriminator_variables)`. `iterations` and
    `learning_rate` are the generator's; setting `learning_rate` sets both (as CompVis, which
    trains both at one rate).

    Example:
    >>> pair = OptimizerPair("adam", "sgd")
    >>> pair.build([keras.Variable(1.0)], [keras.Variable(2.0)])
    >>> len(pair.variables) == len(pair.generator.variables) + len(pair.discriminator.variables)
    True
    """

    def __init__(self, generator=None, discriminator=None, name=None, **kwargs):
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self.generator = keras.optimizers.get(generator) if generator is not None else default_optimizer()
        self.discriminator = (
            keras.optimizers.get(discriminator) if discriminator is not None else default_optimizer()
        )
        if self.generator is self.discriminator:
            raise ValueError("`generator` and `discriminator` must be two optimizer instances, not one.")

    def build(self, generator_variables, discriminator_variables=None):
        if self.built:
            return
        if discriminator_variables is None:
            raise ValueError(
                "OptimizerPair.build needs `generator_variables` and `discriminator_variables`; "
                "compile() the autoencoder to build it."
            )
        self.generator.build(list(generator_variables))
        self.discriminator.build(list(discriminator_variables))
        self.built = True

    @property
    def variables(self):
        return self.generator.variables + self.discriminator.variables

    @property
    def iterations(self):
        return self.generator.iterations

    @property
    def learning_rate(self):
        return self.generator.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.generator.learning_rate = value
        self.discriminator.learning_rate = value

    def apply(self, grads, trainable_variables=None):
        raise NotImplementedError(
            "OptimizerPair does not apply gradients itself; use `pair.generator` and `pair.discriminator`."
        )

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        raise NotImplementedError(
            "OptimizerPair does not apply gradients itself; use `pair.generator` and `pair.discriminator`."
        )

    def finalize_variable_values(self, var_list):
        self.generator.finalize_variable_values(self.generator._trainable_variables)
        self.discriminator.finalize_variable_values(self.discriminator._trainable_variables)

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "generator": serialize(self.generator),
            "discriminator": serialize(self.discriminator),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("generator", "discriminator"):
            config[key] = keras.saving.deserialize_keras_object(config[key], custom_objects=custom_objects)
        return cls(**config)
