"""keras_ldm vs diffusers on one text-to-image LDM: latency, throughput, compile time, memory, TFLOP/s, training.

Both sides run the same network with the same weights: a diffusers `LDMTextToImagePipeline` (UNet,
KL autoencoder, LDMBert, BERT word-piece tokenizer, DDIM scheduler as CompVis samples) is built with
random weights, written with `save_pretrained` and loaded by `keras_ldm.LatentDiffusion.from_preset`
(which converts the folder without PyTorch). Default: the architecture of `CompVis/ldm-text2im-large-256`
(872.3M-parameter UNet, KL-f8, 32-layer LDMBert, 256x256 images), sized for a GPU. `--small` shrinks
every part so that a 2-core CPU finishes in a few minutes.

What is timed (median of `--repeats` calls after a warm-up call of the same shape):
- keras_ldm: `model.generate(prompts, ...)`: tokenize, text encoder (prompts and the empty negative
  prompts), the compiled DDIM loop with classifier-free guidance on a doubled batch, decode, uint8;
- diffusers: `pipeline(prompts, ..., output_type="np")` and the same rounding to uint8 (under bf16,
  `output_type="pt"` and `.float()`: numpy has no bfloat16);
- UNet forward: one call on the guidance batch (compiled on JAX/TensorFlow; on torch `no_grad` and
  recorded by `keras_ldm.backend.traced_call`, as `generate()` calls it);
  TFLOP/s = FLOPs counted by `torch.utils.flop_counter.FlopCounterMode` on the diffusers UNet
  (convolutions, matmuls, attention; 2 FLOPs per multiply-add) / time;
- training: keras_ldm `train_on_batch` (AdamW) vs a PyTorch AdamW step on the diffusers modules doing
  the same work (frozen VAE encode + posterior sample, q_sample, LDMBert and UNet forward/backward,
  MSE); bf16 mixed precision on GPU, float32 on CPU unless `--precision` says otherwise; after
  `TRAIN_WARMUP_STEPS` untimed steps on both sides (on PyTorch, keras_ldm records its UNet, first-stage
  encoder and text encoder in the first three steps, see `keras_ldm.backend.traced_call`).

The parts live in `benchmarks/vs_diffusers/` (models, the one timing loop, generation, training,
report, command line); this file is the entry point. Run one Keras backend per process:

    KERAS_BACKEND=jax python benchmarks/ldm_vs_diffusers.py --device gpu
    KERAS_BACKEND=torch python benchmarks/ldm_vs_diffusers.py --small --device cpu
    KERAS_BACKEND=jax python -m benchmarks.ldm_vs_diffusers --small --device cpu
"""

if __package__:  # python -m benchmarks.ldm_vs_diffusers
    from .vs_diffusers.cli import main
else:  # python benchmarks/ldm_vs_diffusers.py: this folder is on sys.path
    from vs_diffusers.cli import main


if __name__ == "__main__":
    main(description=__doc__.splitlines()[0])
