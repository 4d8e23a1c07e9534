"""Training hyperparameters: one typed `TrainConfig`, named presets, or a JSON file."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from stylegan.discriminator import DiscriminatorConfig
from stylegan.features import LAYER_NAMES
from stylegan.generator import GeneratorConfig

ADVERSARIAL_KINDS = ("lsgan", "wgan-gp", "hinge")


@dataclass
class TrainConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    # Data: contents are resized so their long side is `content_long_side` (jittered by
    # ±`scale_jitter`), then cropped to `crop_size`. Each sample's style is a fresh view
    # (training/batches.py): a square crop covering `style_crop_range` of the short side of a style
    # read at `style_long_side`, resized to `style_view_size`, flipped, hue-rotated with probability
    # `hue_rotation_probability`, saturation scaled within `saturation_range`, with probability
    # `fade_probability` faded towards its mean colour (contrast × a factor within `fade_range`, so pale
    # styles, whose codes otherwise collapse the network's own output, are common); with probability
    # `photo_style_probability` a training photograph is the style.
    crop_size: int = 128
    batch_size: int = 4
    content_long_side: int = 256
    style_long_side: int = 512
    scale_jitter: float = 0.25
    style_view_size: int = 128
    style_crop_range: tuple[float, float] = (0.5, 1.0)
    hue_rotation_probability: float = 0.5
    saturation_range: tuple[float, float] = (0.6, 1.4)
    fade_probability: float = 0.0
    fade_range: tuple[float, float] = (0.15, 0.6)
    photo_style_probability: float = 0.1
    # With this probability a sample's code reads its style's whole image at style_image_size, as inference
    # does (`StyleBank.full_statistics`), and its view keeps the style's own colours: codes read from 128-px
    # views alone left the whole-image codes of some styles (Monet's Impression, Sunrise; Turner) untrained.
    whole_style_code_probability: float = 0.0
    # Styles are drawn with weight 1 + pale_style_weight · max(0, 1 − c / median c), c a style's luminance
    # contrast (std) as a whole (`StyleBank.sampling_weights`): pale styles (Monet's Impression, Sunrise; Turner),
    # 2 of 171, otherwise come so seldom that their whole-image codes stay untrained. 0: uniform.
    pale_style_weight: float = 0.0
    # Losses: total = λadv·adv + λc·content + λs·Gram style (+ λms·mean/std style, + contrastive style,
    # + network contrast floor, + identity for strength-0 samples, + TV), content and style each relative
    # to their target's size (stylegan.losses.relative_*). With `palette_in_loss` the output is first moved
    # onto the style view's palette (stylegan.palette), as inference does, so the network learns texture,
    # not colour.
    adversarial_loss: str = "lsgan"
    adversarial_weight: float = 0.1
    content_weight: float = 1.0
    style_weight: float = 1.0
    mean_std_weight: float = 2.0
    identity_weight: float = 10.0
    tv_weight: float = 0.0
    gradient_penalty_weight: float = 10.0
    palette_in_loss: bool = True
    # With `bands_in_loss` (and the palette) the output then gets the style view's band signature
    # (stylegan.bands), as inference does: the losses see the finished image, so the network is pushed
    # towards what the closed-form steps cannot give instead of what they would give anyway.
    bands_in_loss: bool = False
    # Contrastive style term (stylegan.losses.contrastive_style_loss): each output nearer its own
    # style view's Grams than the batch's other views', at `contrastive_layers` (a subset of style_layers).
    contrastive_weight: float = 0.0
    contrastive_layers: tuple[str, ...] = ("relu3_1", "relu4_1")
    contrastive_temperature: float = 1.0
    # With `contrastive_queue` > 0 the term also compares each output with that many earlier style views
    # (training.negatives.GramQueue), not only the batch's few.
    contrastive_queue: int = 0
    # A floor on how much of its content's luminance pattern the network's own output keeps (regression slope;
    # stylegan.losses.contrast_floor_loss): with `palette_in_loss` the palette hides a near-flat output.
    network_contrast_weight: float = 0.0
    network_contrast_floor: float = 0.5
    # Strength linearity (stylegan.losses.strength_linearity_loss): the network's output at a random
    # strength s in (0, 1) should be s of the way from the content to its full-strength output (training
    # otherwise sees only strengths 0 and 1, and some styles' codes then change most of the image by s = 0.05).
    strength_linearity_weight: float = 0.0
    content_layer: str = "relu4_1"
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    # The Gram style term's weight per style layer, in style_layers' order (empty: all alike); e.g. towards
    # mid-scale texture (relu3_1, relu4_1) in cpu-painting-scale-mid-layers.json.
    style_layer_weights: tuple[float, ...] = ()
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
        self.style_layer_weights = tuple(self.style_layer_weights)
        self.contrastive_layers = tuple(self.contrastive_layers)
        self.style_crop_range = tuple(self.style_crop_range)
        self.saturation_range = tuple(self.saturation_range)
        self.fade_range = tuple(self.fade_range)
        self.betas = tuple(self.betas)
        self.probe_styles = tuple(self.probe_styles)
        if self.adversarial_loss not in ADVERSARIAL_KINDS:
            raise ValueError(f"adversarial_loss must be one of {ADVERSARIAL_KINDS}, got {self.adversarial_loss!r}")
        unknown = {self.content_layer, *self.style_layers} - set(LAYER_NAMES)
        if unknown:
            raise ValueError(f"unknown VGG19 layers {sorted(unknown)}")
        if not set(self.contrastive_layers) <= set(self.style_layers):
            raise ValueError(f"contrastive_layers {self.contrastive_layers} must be among style_layers {self.style_layers}")
        if self.style_layer_weights and (len(self.style_layer_weights) != len(self.style_layers)
                                         or min(self.style_layer_weights) < 0 or not sum(self.style_layer_weights)):
            raise ValueError(f"style_layer_weights must be one non-negative weight per style layer "
                             f"{self.style_layers}, not all 0; got {self.style_layer_weights}")
        if self.contrastive_queue < 0:
            raise ValueError(f"contrastive_queue must be 0 (off) or a number of style views, got {self.contrastive_queue}")
        if self.crop_size % 4:
            raise ValueError(f"crop_size must be a multiple of 4, got {self.crop_size}")
        if not 0 < self.fade_range[0] <= self.fade_range[1] <= 1:
            raise ValueError(f"fade_range must satisfy 0 < low <= high <= 1, got {self.fade_range}")
        if self.bands_in_loss and not self.palette_in_loss:
            raise ValueError("bands_in_loss follows the palette as at inference: it needs palette_in_loss")
        if self.style_view_size < self.crop_size:
            raise ValueError(f"style_view_size {self.style_view_size} must be at least crop_size {self.crop_size}")
        if self.discriminator.style_statistics_dim != self.generator.style_statistics_dim:
            self.discriminator = dataclasses.replace(
                self.discriminator, style_statistics_dim=self.generator.style_statistics_dim)

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


PRESETS: dict[str, TrainConfig] = {
    # What runs on a 2-core CPU in a few hours (see README "Training").
    "cpu-small": TrainConfig(),
    # A real GPU run: 256-px crops, batch 16; evaluate on the validation split every few thousand steps.
    "gpu-full": TrainConfig(crop_size=256, batch_size=16, steps=160_000, style_view_size=256,
                            content_long_side=512, sample_every=2000, checkpoint_every=2000,
                            log_every=50, discriminator=DiscriminatorConfig(num_scales=2)),
    # Seconds, for tests.
    "tiny": TrainConfig(generator=GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=1,
                                                  style_dim=8, style_hidden_dim=16,
                                                  style_image_size=32),
                        discriminator=DiscriminatorConfig(base_channels=4, num_layers=2),
                        crop_size=32, batch_size=2, content_long_side=48, style_long_side=48,
                        style_view_size=40, steps=4, log_every=1, sample_every=2,
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
