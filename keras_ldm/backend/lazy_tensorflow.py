"""TensorFlow as a library, imported on first use, whatever the Keras backend: `tf.data` pipelines
(`keras_ldm.data`) and TensorBoard image summaries (`keras_ldm.training.callbacks`).

Those modules read `tf` from here and never import TensorFlow themselves: their numpy helpers (shapes,
photo crops, masks) and the rest of keras_ldm then work on hosts without TensorFlow (a JAX + CUDA or
PyTorch machine), while their `tf.data` pipelines and summaries need it.

Example:
>>> from keras_ldm.backend.lazy_tensorflow import tf
>>> tf.constant(1).dtype.name
'int32'
"""

import importlib
import importlib.util


def tensorflow_installed():
    """Whether `import tensorflow` can work here (False also where it is blocked: `sys.modules` entry None).

    Example:
    >>> isinstance(tensorflow_installed(), bool)
    True
    """
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ValueError, ImportError):  # ValueError: sys.modules["tensorflow"] is None
        return False


class LazyModule:
    """A module object that imports `name` when one of its attributes is first read."""

    def __init__(self, name):
        self._name = name
        self._module = None

    def __getattr__(self, attribute):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)


tf = LazyModule("tensorflow")
