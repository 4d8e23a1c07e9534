"""Loss functions, each a small pure function. Logits are raw discriminator outputs."""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .images import structure_kept


def gram_matrix(features: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, C): G = F·Fᵀ / (C·H·W) (Johnson et al., 2016 normalisation)."""
    batch, channels, height, width = features.shape
    flat = features.reshape(batch, channels, height * width)
    return flat @ flat.transpose(1, 2) / (channels * height * width)


def content_loss(features: Tensor, content_features: Tensor) -> Tensor:
    """Feature reconstruction MSE, (1/N) Σ (F - P)² (Gatys et al., 2016; Johnson et al., 2016)."""
    return F.mse_loss(features, content_features)


def style_loss(features: Mapping[str, Tensor], target_grams: Mapping[str, Tensor],
               layer_weights: Mapping[str, float] | None = None) -> Tensor:
    """Gram style loss (Gatys et al., 2016, without their ¼): Σ_l w_l/(N_l²M_l²) Σ_ij (G_ij - A_ij)²,
    G = F·Fᵀ, N_l channels, M_l = H·W.

    With `gram_matrix`'s normalisation this is Σ_l w_l Σ_ij (Ĝ - Â)², averaged over the batch.
    `target_grams` holds normalised Grams of the style, (B, C, C) or (C, C) per layer.
    """
    total = features[next(iter(target_grams))].new_zeros(())
    for name, target in target_grams.items():
        weight = 1.0 if layer_weights is None else layer_weights[name]
        gram = gram_matrix(features[name])
        total = total + weight * ((gram - target.expand_as(gram)) ** 2).sum(dim=(1, 2)).mean()
    return total


def relative_content_loss(features: Tensor, content_features: Tensor) -> Tensor:
    """`content_loss` divided by the content features' mean square: about 1 for unrelated features
    at any layer and any activation scale (caffe-scale VGG activations are in the hundreds)."""
    return content_loss(features, content_features) / content_features.square().mean().clamp_min(1e-8)


def relative_style_loss(features: Mapping[str, Tensor], target_grams: Mapping[str, Tensor],
                        layer_weights: Mapping[str, float] | None = None) -> Tensor:
    """Gram style loss with each layer's weight w_l = 1/‖A_l‖²: per sample and layer ‖G - A‖² / ‖A‖²,
    averaged over layers and the batch. Every layer counts alike (or as `layer_weights` say, a weighted
    mean); with 1/C² weights the caffe-scale activations gave relu4_1 ~4,000× the gradient of relu1_1,
    where colour and fine texture live."""
    total = features[next(iter(target_grams))].new_zeros(())
    for name, target in target_grams.items():
        gram = gram_matrix(features[name])
        target = target.expand_as(gram)
        error = (gram - target).square().sum(dim=(1, 2)) / target.square().sum(dim=(1, 2)).clamp_min(1e-8)
        total = total + (1.0 if layer_weights is None else layer_weights[name]) * error.mean()
    return total / (len(target_grams) if layer_weights is None else sum(layer_weights[name] for name in target_grams))


def mean_std_loss(features: Mapping[str, Tensor], target_moments: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
    """Style as per-channel mean and standard deviation (Huang & Belongie, 2017), each layer relative
    to the target's size: ‖μ - μₛ‖² + ‖σ - σₛ‖² over ‖μₛ‖² + ‖σₛ‖², averaged over layers and the batch."""
    total = features[next(iter(target_moments))].new_zeros(())
    for name, (target_mean, target_std) in target_moments.items():
        flat = features[name].flatten(2)
        error = (flat.mean(-1) - target_mean).square().sum(1) + (flat.std(-1) - target_std).square().sum(1)
        size = target_mean.square().sum(1) + target_std.square().sum(1)
        total = total + (error / size.clamp_min(1e-8)).mean()
    return total / len(target_moments)


def contrastive_style_loss(features: Mapping[str, Tensor], target_grams: Mapping[str, Tensor],
                           temperature: float = 1.0, negative_grams: Mapping[str, Tensor] | None = None,
                           same_style: Tensor | None = None) -> Tensor:
    """Style as identification across the batch: InfoNCE (Oord et al., 2018) over Gram distances, a
    contrastive style term in the spirit of Chen et al. (2021) and Zhang et al. (2022, CAST).

    d_ij = mean over layers of ‖G_i - A_j‖² / ‖A_j‖² between output i and sample j's style target;
    logits_ij = -log(d_ij) / τ, so only ratios of distances count (caffe-scale activations put the
    layers orders of magnitude apart). Each output has to be nearer its own style than the batch's
    others: one texture for every style, which the Gram loss alone tolerates, is penalised.
    Needs at least two samples; (B, C, C) targets.

    `negative_grams`: (N, C, C) per layer, more styles to be farther from than the batch's (a memory
    queue of earlier batches' targets, as in MoCo, He et al., 2020); `same_style`, (B, N) bool, marks
    those that are views of a sample's own style, left out of its comparison.
    """
    def distances(grams: Mapping[str, Tensor]) -> Tensor:
        total = 0
        for name, target in grams.items():
            gram, target = gram_matrix(features[name]).flatten(1), target.flatten(1)
            size = target.square().sum(1)
            # ‖G - A‖² = ‖G‖² + ‖A‖² - 2⟨G, A⟩: (B outputs, targets) without a (B, N, C, C) difference.
            error = (gram.square().sum(1)[:, None] + size[None] - 2 * gram @ target.T).clamp_min(0)
            total = total + error / size.clamp_min(1e-8)[None]
        return -torch.log(total / len(grams) + 1e-8) / temperature

    logits = distances(target_grams)
    if negative_grams is not None:
        extra = distances(negative_grams)
        if same_style is not None:
            extra = extra.masked_fill(same_style, float("-inf"))
        logits = torch.cat([logits, extra], dim=1)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def contrast_floor_loss(images: Tensor, references: Tensor, floor: float) -> Tensor:
    """Mean over the batch of relu(floor − k)², k = `stylegan.images.structure_kept`, the share of the reference's
    luminance pattern an image carries: zero while each image keeps at least `floor` of it, growing as it
    flattens. Contrast of the image's own (blobs, a texture unrelated to the content) does not count: a floor on
    the plain contrast ratio let the network meet it with blobs that erased the content (faces lost for pale
    styles such as Monet's Impression, Sunrise)."""
    return F.relu(floor - structure_kept(images, references)).square().mean()


def strength_linearity_loss(partial: Tensor, full: Tensor, content: Tensor, strength: Tensor) -> Tensor:
    """Mean over the batch of ((d(partial) − s·d(full)) / d(full))², d(x) = mean |x − content| per image:
    the output at strength s should be s of the way from the content, measured as the full-strength
    output is (held fixed: the term shapes the path to it, not the full-strength result). A style slider
    whose first 5 % already gives most of the change is the failure this prevents."""
    def distance(images: Tensor) -> Tensor:
        return (images - content).abs().flatten(1).mean(1)
    reach = distance(full.detach()).clamp_min(1e-4)
    return ((distance(partial) - strength * reach) / reach).square().mean()


def total_variation_loss(images: Tensor) -> Tensor:
    """Anisotropic TV: mean |x[i+1] - x[i]| over both image axes."""
    return ((images[..., 1:, :] - images[..., :-1, :]).abs().mean()
            + (images[..., :, 1:] - images[..., :, :-1]).abs().mean())


# LSGAN (Mao et al., 2017): D: ½E[(D(x)-1)²] + ½E[D(G(z))²]; G: ½E[(D(G(z))-1)²].
def lsgan_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return 0.5 * ((real_logits - 1) ** 2).mean() + 0.5 * (fake_logits ** 2).mean()


def lsgan_g_loss(fake_logits: Tensor) -> Tensor:
    return 0.5 * ((fake_logits - 1) ** 2).mean()


# Wasserstein (Arjovsky et al., 2017), written as losses to minimise.
def wasserstein_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return fake_logits.mean() - real_logits.mean()


def wasserstein_g_loss(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()


# Hinge (Lim & Ye, 2017; Miyato et al., 2018).
def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()


def gradient_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP (Gulrajani et al., 2017): E[(‖∇D(x̂)‖₂ - 1)²], x̂ on lines between real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    logits = discriminator(mixed)
    (gradients,) = torch.autograd.grad(logits.sum(), mixed, create_graph=True)
    return ((gradients.flatten(1).norm(dim=1) - 1) ** 2).mean()


ADVERSARIAL_LOSSES: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "lsgan": (lsgan_d_loss, lsgan_g_loss),
    "wgan-gp": (wasserstein_d_loss, wasserstein_g_loss),
    "hinge": (hinge_d_loss, hinge_g_loss),
}


def total_generator_loss(adversarial: Tensor, content: Tensor, style: Tensor,
                         content_weight: float, style_weight: float) -> Tensor:
    """ℓ_total = ℓ_adv + λc·ℓ_content + λs·ℓ_style: perceptual losses (Johnson et al., 2016) plus an adversarial
    term (Goodfellow et al., 2014)."""
    return adversarial + content_weight * content + style_weight * style
