"""Gradients, optimizer updates and the JAX state plumbing of the training steps.

Training code elsewhere (`keras_ldm.training.autoencoder_trainer`) is written once, in the stateful Keras
style (read variables, `assign`, `optimizer.apply`), and calls:

| function          | jax                                     | tensorflow          | torch                  |
|-------------------|-----------------------------------------|---------------------|------------------------|
| `value_and_grad`  | `jax.value_and_grad` of a pure function | `tf.GradientTape`,  | `torch.autograd.grad`, |
|                   | (variables mapped through a             | dense gradients     | the graph kept         |
|                   | `StatelessScope`, assignments replayed) |                     |                        |
| `apply_gradients` | `optimizer.apply`                       | `optimizer.apply`   | the same, no_grad      |
| `run_train_step`, | the stateful step inside a              | the stateful step   | the stateful step      |
| `run_test_step`   | `StatelessScope` over Keras' `(state,   |                     |                        |
|                   | data)`, the new state read back         |                     |                        |
| `snapshot`        | copies detached from autograd, in `keras.ops` on every backend                      |

`value_and_grad(fn, variables, context)`: `fn()` returns `(loss, aux)`; the gradient of `loss` with respect
to `variables`. Calls nest (a gradient inside a loss). jax, tensorflow and torch are imported inside their
function.
"""

import keras
from keras import ops


def value_and_grad(fn, variables, context=()):
    """`((loss, aux), grads)` where `(loss, aux) = fn()` and `grads` are d loss / d `variables`.

    Args:
        fn: a function of no arguments returning a float scalar `loss` and any `aux` structure.
        variables: the Keras variables to differentiate with respect to.
        context: every other variable `fn` reads or assigns (used by JAX, which runs `fn` purely).

    Example:
    >>> w = keras.Variable(3.0)
    >>> (loss, aux), grads = value_and_grad(lambda: (w * w, None), [w])
    >>> float(keras.ops.convert_to_numpy(loss)), float(keras.ops.convert_to_numpy(grads[0]))
    (9.0, 6.0)
    """
    functions = {
        "jax": _jax_value_and_grad,
        "tensorflow": _tensorflow_value_and_grad,
        "torch": _torch_value_and_grad,
    }
    backend = keras.backend.backend()
    if backend not in functions:
        raise NotImplementedError(f"Training is not implemented for the {backend!r} backend.")
    return functions[backend](fn, list(variables), context)


def _jax_value_and_grad(fn, variables, context):
    import jax

    ids = {id(v) for v in variables}
    others = [v for v in context if id(v) not in ids]

    def pure(values, other_values):
        mapping = list(zip(variables, values)) + list(zip(others, other_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss, aux = fn()
        updates = [scope.get_current_value(v) for v in variables + others]
        return loss, (aux, updates)

    values = [v.value for v in variables]
    other_values = [v.value for v in others]
    (loss, (aux, updates)), grads = jax.value_and_grad(pure, has_aux=True)(values, other_values)
    for variable, old, new in zip(variables + others, values + other_values, updates):
        if new is not old:  # replay what `fn` assigned (into the enclosing scope, if any)
            variable.assign(new)
    return (loss, aux), grads


def _tensorflow_value_and_grad(fn, variables, context):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss, aux = fn()
    grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    # Dense gradients: Keras' TF optimizers treat the IndexedSlices of a gather (the codebook)
    # slice by slice, so repeated indices would get Adam moments of their parts, not of their sum.
    grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
    return (loss, aux), grads


def _torch_value_and_grad(fn, variables, context):
    import torch

    with torch.enable_grad():
        loss, aux = fn()
    values = [v.value for v in variables]
    if not loss.requires_grad:
        return (loss, aux), [torch.zeros_like(value) for value in values]
    # The graph is kept: an outer `value_and_grad` may differentiate `loss` again.
    grads = torch.autograd.grad(loss, values, retain_graph=True, allow_unused=True)
    grads = [torch.zeros_like(value) if g is None else g for g, value in zip(grads, values)]
    return (loss, aux), grads


def apply_gradients(optimizer, grads, variables):
    """`optimizer.apply(grads, variables)` (outside autograd on PyTorch)."""
    if keras.backend.backend() == "torch":
        _torch_apply_gradients(optimizer, grads, variables)
    else:
        optimizer.apply(grads, variables)


def _torch_apply_gradients(optimizer, grads, variables):
    import torch

    with torch.no_grad():
        optimizer.apply(grads, variables)


def snapshot(variables):
    """Copies of the current values of `variables` (detached from autograd)."""
    return [ops.copy(ops.stop_gradient(ops.convert_to_tensor(v.value))) for v in variables]


def run_train_step(model, step_fn, *args):
    """Runs `step_fn(data) -> logs` as `model.train_step`; JAX passes `(state, data)` and gets `(logs, state)`."""
    if keras.backend.backend() != "jax":
        (data,) = args
        return step_fn(data)
    state, data = args
    groups = [
        model.trainable_variables,
        model.non_trainable_variables,
        model.optimizer.variables,
        model.metrics_variables,
    ]
    return _jax_run_stateless(groups, state, step_fn, data)


def run_test_step(model, step_fn, *args):
    """Like `run_train_step` for `model.test_step` (the JAX state has no optimizer variables)."""
    if keras.backend.backend() != "jax":
        (data,) = args
        return step_fn(data)
    state, data = args
    groups = [model.trainable_variables, model.non_trainable_variables, model.metrics_variables]
    return _jax_run_stateless(groups, state, step_fn, data)


def _jax_run_stateless(groups, state, step_fn, data):
    mapping = [pair for variables, values in zip(groups, state) for pair in zip(variables, values)]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        logs = step_fn(data)
    new_state = tuple([scope.get_current_value(v) for v in variables] for variables in groups)
    return logs, new_state
