"""archive-style GAN: arbitrary-style image stylisation for digitised archives (not NVIDIA's StyleGAN)."""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.4.0"
__all__ = ["Discriminator", "DiscriminatorConfig", "Generator", "GeneratorConfig", "Stylizer", "__version__"]

if TYPE_CHECKING:
    from .discriminator import Discriminator, DiscriminatorConfig
    from .generator import Generator, GeneratorConfig
    from .inference import Stylizer


def __getattr__(name: str):
    # Lazy: importing the package loads nothing heavy and touches no device or network.
    if name == "Stylizer":
        from .inference import Stylizer
        return Stylizer
    if name in ("Generator", "GeneratorConfig"):
        from . import generator
        return getattr(generator, name)
    if name in ("Discriminator", "DiscriminatorConfig"):
        from . import discriminator
        return getattr(discriminator, name)
    raise AttributeError(f"module 'stylegan' has no attribute {name!r}")
