"""emca: pose-guided person image generation (XingGAN, XingGAN++) with fused cross-attention."""

__version__ = "0.1.0"

# registers the config resolvers (${emca_cpu_precision:}) before any config is composed
from emca import config as _config  # noqa: E402,F401
