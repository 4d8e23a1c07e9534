"""One discriminator step and one generator step, alternating (Goodfellow et al., 2014), each returning
its losses.

`training_step` runs both on one batch with a single generator forward: the D step does not
change G, so the G step's output (detached) is exactly what the D step would compute again.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stylegan import losses
from stylegan.bands import transfer_bands
from stylegan.features import VGG19Features
from stylegan.palette import apply_lut, fit_lut

from .batches import Batch
from .config import TrainConfig
from .negatives import GramQueue


def autocast(config: TrainConfig, device: torch.device):
    if device.type == "cuda" and config.mixed_precision:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def unwrap(generator: nn.Module) -> nn.Module:
    return getattr(generator, "module", generator)  # DDP wraps; encode/blend are plain methods


class Stylized(NamedTuple):
    network: Tensor  # the generator's own output
    output: Tensor  # that, moved onto each style view's palette (`palette_in_loss`) and bands (`bands_in_loss`)


def stylize_batch(generator: nn.Module, batch: Batch, config: TrainConfig) -> Stylized:
    """The generator's output, and that moved onto each style view's palette as at inference
    (`palette_in_loss`; the table is fitted without gradient, the image goes through it with gradient),
    then onto its band signature (`bands_in_loss`; with gradient through the band maps)."""
    module = unwrap(generator)
    code = module.blend(module.encode_style(batch.style_statistics), batch.strength)
    network = generator(batch.content, code)
    if not config.palette_in_loss:
        return Stylized(network, network)
    output = apply_lut(network, fit_lut(network.float(), batch.palettes), batch.strength)
    if config.bands_in_loss:
        output = torch.cat([transfer_bands(image[None].float(), signature, float(strength)).to(output.dtype)
                            for image, signature, strength in zip(output, batch.band_signatures, batch.strength)])
    return Stylized(network, output)


def discriminator_step(generator: nn.Module, discriminator: nn.Module, optimizer: torch.optim.Optimizer,
                       batch: Batch, config: TrainConfig, rng: torch.Generator,
                       stylized: Stylized | None = None) -> dict[str, float]:
    """D learns real style patches vs stylised outputs, both conditioned on the style.

    `stylized`: the generator's output for this batch, if already computed (`training_step`).
    """
    d_loss_fn, _ = losses.ADVERSARIAL_LOSSES[config.adversarial_loss]
    styled = batch.strength > 0
    with torch.no_grad(), autocast(config, batch.content.device):
        fake = (stylized or stylize_batch(generator, batch, config)).output.detach()[styled].float()
    real = batch.style_crops[styled]
    statistics = unwrap(generator).standardize_style(batch.style_statistics[styled])
    with autocast(config, batch.content.device):
        real_logits = discriminator(real, statistics).float()
        fake_logits = discriminator(fake, statistics).float()
        loss = d_loss_fn(real_logits, fake_logits)
        result = {"d_loss": loss.item()}
        if config.adversarial_loss == "wgan-gp":
            penalty = losses.gradient_penalty(lambda images: discriminator(images, statistics),
                                              real, fake, generator=rng)
            loss = loss + config.gradient_penalty_weight * penalty
            result["gradient_penalty"] = penalty.detach().item()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    result["d_real"] = real_logits.mean().item()
    result["d_fake"] = fake_logits.mean().item()
    return result


def generator_step(generator: nn.Module, discriminator: nn.Module, vgg: VGG19Features,
                   optimizer: torch.optim.Optimizer, batch: Batch, config: TrainConfig,
                   stylized: Stylized | None = None, queue: GramQueue | None = None) -> dict[str, float]:
    """ℓ_total = λadv·ℓ_adv + λc·ℓ_content + λs·ℓ_style (+ λms·mean/std style, + contrastive style,
    + network contrast floor, + strength linearity, + identity at strength 0, + TV).

    `stylized`: the generator's output for this batch with its graph, if already computed; `queue`: earlier
    style views for the contrastive term to compare with besides the batch's (then this batch's are added).
    """
    _, g_loss_fn = losses.ADVERSARIAL_LOSSES[config.adversarial_loss]
    styled = batch.strength > 0
    layers = tuple(dict.fromkeys((config.content_layer, *config.style_layers)))
    with autocast(config, batch.content.device):
        with torch.no_grad():
            content_features = vgg(batch.content, (config.content_layer,))[config.content_layer]
        network, stylized = stylized or stylize_batch(generator, batch, config)
        features = {name: value.float() for name, value in vgg(stylized, layers).items()}
        content = losses.relative_content_loss(features[config.content_layer], content_features.float())
        style = moments = adversarial = contrastive = flattening = linearity = torch.zeros((), device=stylized.device)
        if styled.any():
            styled_features = {name: features[name][styled] for name in config.style_layers}
            style = losses.relative_style_loss(
                styled_features, {name: batch.target_grams[name][styled] for name in config.style_layers},
                dict(zip(config.style_layers, config.style_layer_weights)) if config.style_layer_weights else None)
            moments = losses.mean_std_loss(
                styled_features, {name: (mean[styled], std[styled]) for name, (mean, std) in batch.target_moments.items()})
            if config.contrastive_weight and int(styled.sum()) > 1:
                targets = {name: batch.target_grams[name][styled] for name in config.contrastive_layers}
                negatives, same_style = (queue.negatives(batch.styles[styled]) if queue is not None and len(queue)
                                         else (None, None))
                contrastive = losses.contrastive_style_loss(
                    {name: styled_features[name] for name in config.contrastive_layers}, targets,
                    config.contrastive_temperature, negatives, same_style)
                if queue is not None:
                    queue.push(targets, batch.styles[styled])
            if config.network_contrast_weight:
                # With the palette in the loss, the palette stretches a near-flat network output back to the
                # style's contrast, so without this nothing downstream sees the network flatten.
                flattening = losses.contrast_floor_loss(network[styled].float(), batch.content[styled],
                                                        config.network_contrast_floor)
            if config.strength_linearity_weight:
                module, partial_strength = unwrap(generator), batch.partial_strength[styled]
                code = module.blend(module.encode_style(batch.style_statistics[styled]), partial_strength)
                partial = generator(batch.content[styled], code)
                linearity = losses.strength_linearity_loss(partial.float(), network[styled].float(),
                                                           batch.content[styled], partial_strength)
            conditioning = unwrap(generator).standardize_style(batch.style_statistics[styled])
            adversarial = g_loss_fn(discriminator(stylized[styled], conditioning).float())
        total = losses.total_generator_loss(config.adversarial_weight * adversarial, content, style,
                                            config.content_weight, config.style_weight)
        total = (total + config.mean_std_weight * moments + config.contrastive_weight * contrastive
                 + config.network_contrast_weight * flattening + config.strength_linearity_weight * linearity)
        result = {"content": content.detach().item(), "style": style.detach().item(),
                  "mean_std": moments.detach().item(), "network_flattening": flattening.detach().item(),
                  "strength_linearity": linearity.detach().item(),
                  "contrastive": contrastive.detach().item(), "g_adv": adversarial.detach().item()}
        if (~styled).any():
            identity = F.mse_loss(stylized[~styled].float(), batch.content[~styled])
            total = total + config.identity_weight * identity
            result["identity"] = identity.detach().item()
        if config.tv_weight:
            total = total + config.tv_weight * losses.total_variation_loss(stylized.float())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    result["g_total"] = total.detach().item()
    return result


def training_step(generator: nn.Module, discriminator: nn.Module, vgg: VGG19Features,
                  g_optimizer: torch.optim.Optimizer, d_optimizer: torch.optim.Optimizer, batch: Batch,
                  config: TrainConfig, rng: torch.Generator, queue: GramQueue | None = None) -> dict[str, float]:
    """`discriminator_step` then `generator_step` with the same values, one generator forward fewer."""
    with autocast(config, batch.content.device):
        stylized = stylize_batch(generator, batch, config)
    result = discriminator_step(generator, discriminator, d_optimizer, batch, config, rng, stylized)
    return result | generator_step(generator, discriminator, vgg, g_optimizer, batch, config, stylized, queue)
