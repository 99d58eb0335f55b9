"""emca: pose-guided person image generation (XingGAN, XingGAN++) with fused cross-attention."""

__version__ = "0.1.0"
