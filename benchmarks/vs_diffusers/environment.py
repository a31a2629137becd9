"""The Keras backend, the device and the CPU threads of a run, set before jax/tensorflow/torch start."""

import os
import sys

from .timing import NotMeasured

BACKENDS = ("jax", "tensorflow", "torch")


def fail(message):
    print(f"ldm_vs_diffusers.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def select_backend(requested):
    """Sets KERAS_BACKEND (before Keras is imported) and returns it; exits when it cannot be used."""
    configured = os.environ.get("KERAS_BACKEND")
    if requested and configured and requested != configured:
        fail(f"--backend={requested} but KERAS_BACKEND={configured}; run with KERAS_BACKEND={requested}.")
    backend = requested or configured
    if backend is None:
        fail(f"set KERAS_BACKEND (or pass --backend) to one of {', '.join(BACKENDS)}.")
    if backend not in BACKENDS:
        fail(f"KERAS_BACKEND={backend!r}; this benchmark runs on {', '.join(BACKENDS)}.")
    os.environ["KERAS_BACKEND"] = backend
    require(backend, "torch")
    return backend


def require(*modules):
    for name in modules:
        try:
            __import__(name)
        except ImportError as error:
            fail(f"this benchmark needs {name!r}, which does not import here: {error}")


def prepare_device(device, threads):
    """Environment for the device and thread count, set before jax/tensorflow/torch start."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if threads == 1:
            flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["JAX_PLATFORMS"] = "cpu"
    else:  # several runtimes share one GPU: none may take all of its memory up front
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")


def set_threads(threads):
    """The CPU thread count of torch and (where installed) TensorFlow; None: each library's own."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)
    from keras_ldm.backend.lazy_tensorflow import tensorflow_installed

    if tensorflow_installed():
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def gpus_visible(backend):
    """(torch sees a GPU, the Keras backend sees a GPU)."""
    import torch

    torch_gpu = torch.cuda.is_available()
    if backend == "jax":
        import jax

        try:
            keras_gpu = len(jax.devices("gpu")) > 0
        except RuntimeError:
            keras_gpu = False
    elif backend == "tensorflow":
        import tensorflow as tf

        keras_gpu = len(tf.config.list_physical_devices("GPU")) > 0
    else:
        keras_gpu = torch_gpu
    return torch_gpu, keras_gpu


def resolve_device(requested, backend):
    if requested == "cpu":
        return "cpu"
    torch_gpu, keras_gpu = gpus_visible(backend)
    if requested == "auto":
        return "gpu" if torch_gpu and keras_gpu else "cpu"
    if not (torch_gpu and keras_gpu):
        fail(
            f"--device gpu, but no GPU is visible to both sides (torch/diffusers: "
            f"{'yes' if torch_gpu else 'no'}, {backend}/keras_ldm: {'yes' if keras_gpu else 'no'}). "
            f"Use --device cpu (with --small on a small machine)."
        )
    from keras_ldm.backend.lazy_tensorflow import tensorflow_installed

    if backend != "tensorflow" and tensorflow_installed():  # then it only tokenizes: keep it off the GPU
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
    return "gpu"


class Device:
    """Synchronisation and peak-memory counters of one side (keras_ldm's backend or torch)."""

    def __init__(self, kind, backend):
        self.kind, self.backend = kind, backend

    def sync(self):
        if self.kind == "gpu" and self.backend == "torch":
            import torch

            torch.cuda.synchronize()

    def reset_peak(self):
        """Starts a peak-memory window; returns the bytes already held that are not this side's."""
        if self.kind != "gpu":
            return 0
        if self.backend == "torch":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        if self.backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")
        return 0  # jax: its peak counter covers the whole process, and keras_ldm is its only user

    def peak(self, baseline=0):
        if self.kind != "gpu":
            return NotMeasured("n/a (CPU)")
        if self.backend == "torch":
            import torch

            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - baseline
        if self.backend == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"]
        import jax

        stats = jax.local_devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" not in stats:
            return NotMeasured("jax reports no peak_bytes_in_use on this device")
        return stats["peak_bytes_in_use"]
