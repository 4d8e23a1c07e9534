"""Training hyperparameters: one typed `TrainConfig`, named presets, or a JSON file."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from stylegan.discriminator import DiscriminatorConfig
from stylegan.features import LAYER_NAMES
from stylegan.generator import VGG_CHANNELS, GeneratorConfig

ADVERSARIAL_KINDS = ("lsgan", "wgan-gp", "hinge")


@dataclass
class TrainConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    # Data: contents are resized so their long side is `content_long_side` (jittered by
    # ±`scale_jitter`), then cropped to `crop_size`; styles are read at `style_long_side`,
    # the scale at which their Gram targets are computed (the evaluation uses 512).
    crop_size: int = 128
    batch_size: int = 4
    content_long_side: int = 512
    style_long_side: int = 512
    scale_jitter: float = 0.25
    style_code_views: int = 8  # augmented views per style for the code (random crops and scales)
    # Share of samples whose style is a random mix of two training styles (statistics and Gram
    # targets interpolated): a continuum of styles between the few training ones, for unseen styles.
    style_mix_probability: float = 0.0
    # Losses: total = adv·λadv + λc·content + λs·style (+ identity for strength-0 samples, + TV)
    adversarial_loss: str = "lsgan"
    adversarial_weight: float = 1.0
    content_weight: float = 1e-5
    style_weight: float = 3e-5
    identity_weight: float = 10.0
    tv_weight: float = 0.0
    gradient_penalty_weight: float = 10.0
    content_layer: str = "relu4_1"
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    identity_probability: float = 0.15  # share of samples trained at strength 0
    # Optimisation
    generator_lr: float = 1e-3
    discriminator_lr: float = 4e-4
    betas: tuple[float, float] = (0.5, 0.999)
    ema_decay: float = 0.995
    steps: int = 8000
    mixed_precision: bool = True  # bf16/fp16 autocast on CUDA only
    # Visibility and state
    log_every: int = 10
    sample_every: int = 250
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    num_probe_contents: int = 4
    probe_styles: tuple[str, ...] = ()  # style file stems; empty = the first 4 styles
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.generator, dict):
            self.generator = GeneratorConfig(**self.generator)
        if isinstance(self.discriminator, dict):
            self.discriminator = DiscriminatorConfig(**self.discriminator)
        self.style_layers = tuple(self.style_layers)
        self.betas = tuple(self.betas)
        self.probe_styles = tuple(self.probe_styles)
        if self.adversarial_loss not in ADVERSARIAL_KINDS:
            raise ValueError(f"adversarial_loss must be one of {ADVERSARIAL_KINDS}, got {self.adversarial_loss!r}")
        unknown = {self.content_layer, *self.style_layers} - set(LAYER_NAMES)
        if unknown:
            raise ValueError(f"unknown VGG19 layers {sorted(unknown)}")
        if self.crop_size % 4:
            raise ValueError(f"crop_size must be a multiple of 4, got {self.crop_size}")
        if self.discriminator.style_statistics_dim != self.generator.style_statistics_dim:
            self.discriminator = dataclasses.replace(
                self.discriminator, style_statistics_dim=self.generator.style_statistics_dim)

    @property
    def style_layer_weights(self) -> dict[str, float]:
        """1/C² per layer, so each layer's Σ(Ĝ-Â)² counts as its mean squared error."""
        return {name: 1.0 / VGG_CHANNELS[name] ** 2 for name in self.style_layers}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**values)


# Loss weights of the best run of the 2026-11-26 GPU sweep (training/configs/sweep/A.json, README
# "The bundled default model"): a light adversarial term and style mixing generalised best to unseen
# styles; adversarial weight 0.3, style weight 1e-3 or no mixing all scored lower.
SWEEP_A_LOSSES = {"adversarial_weight": 0.05, "style_weight": 3e-4, "style_mix_probability": 0.5}

PRESETS: dict[str, TrainConfig] = {
    # What runs on a 2-core CPU in about two hours (see README "Training").
    "cpu-small": TrainConfig(**SWEEP_A_LOSSES),
    # A real GPU run: ~80k COCO/WikiArt-scale contents and a few thousand styles, 256-px crops,
    # batch 16, 160k steps; about 10-12 hours on one H100 with bf16 autocast. With only the
    # project's 32 styles, evaluate every few thousand steps: longer runs generalised worse.
    "gpu-full": TrainConfig(crop_size=256, batch_size=16, steps=160_000, style_code_views=32,
                            content_long_side=768, sample_every=2000, checkpoint_every=2000,
                            log_every=50, discriminator=DiscriminatorConfig(num_scales=2), **SWEEP_A_LOSSES),
    # Seconds, for tests.
    "tiny": TrainConfig(generator=GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=1,
                                                  style_dim=8, style_hidden_dim=16,
                                                  style_image_size=32),
                        discriminator=DiscriminatorConfig(base_channels=4, num_layers=2),
                        crop_size=32, batch_size=2, content_long_side=48, style_long_side=48,
                        style_code_views=2, steps=4, log_every=1, sample_every=2,
                        checkpoint_every=2, num_probe_contents=1),
}


def load_config(name_or_path: str) -> TrainConfig:
    """A preset name from PRESETS or the path of a JSON file with TrainConfig fields."""
    if name_or_path in PRESETS:
        return dataclasses.replace(PRESETS[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"--config {name_or_path!r} is neither a preset {sorted(PRESETS)} nor a JSON file")
    return TrainConfig.from_json(path.read_text())
