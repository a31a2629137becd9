"""PyTorch checkpoints (`.ckpt` pickles) as numpy arrays, on every Keras backend.

| backend                | `read_torch_state_dict(path)`                                              |
|------------------------|----------------------------------------------------------------------------|
| jax, tensorflow, torch | `torch.load` on the CPU (PyTorch as a file reader, not as a Keras backend) |

`keras_ldm.convert.compvis` reads the CompVis checkpoints with it; a `.safetensors` copy loads without
PyTorch (`safetensors.numpy`).
"""

import pickle


def read_torch_state_dict(path, weights_only=True):
    """`{name: numpy array}` of the tensors in the checkpoint's `state_dict` (or of the checkpoint itself).

    Args:
        path: a PyTorch pickle (`.ckpt`, `.pt`).
        weights_only: `torch.load(weights_only=True)`, which refuses arbitrary Python objects.

    bfloat16 tensors come back as float32 (numpy has no bfloat16); entries other than tensors are left out.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading {path} (a PyTorch pickle) needs PyTorch: `pip install torch`. "
            f"A .safetensors copy of its state_dict loads without it."
        ) from error
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds Python objects besides tensors, which torch.load(weights_only=True) refuses "
            f"({str(error).splitlines()[0]}). If you trust the file, pass weights_only=False "
            f"(unpickling can run code from it)."
        ) from error
    state = checkpoint.get("state_dict", checkpoint)
    return {key: _to_numpy(value) for key, value in state.items() if isinstance(value, torch.Tensor)}


def _to_numpy(tensor):
    import torch

    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
