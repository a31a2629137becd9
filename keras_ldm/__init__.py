"""Latent Diffusion Models for Keras 3."""
