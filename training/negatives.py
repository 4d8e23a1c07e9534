"""A memory queue of earlier batches' style targets: more negatives for the contrastive style term.

With a batch of a few samples each output is told apart from only a few other styles, rarely a similar
one; keeping the last `size` style views' Grams (detached, as MoCo keeps its keys: He et al., 2020) adds
many more, the similar ones among them. Not checkpointed: after a resume it refills within size / batch steps.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


class GramQueue:
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a Gram queue needs a size of at least 1, got {size}")
        self.size = size
        self._grams: dict[str, Tensor] = {}
        self._styles = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self._styles)

    def negatives(self, styles: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The queued Grams per layer, (N, C, C), and which of them are views of each of `styles`' own
        style, (B, N) bool. Check `len` first: an empty queue has no Grams to give."""
        return self._grams, styles[:, None].cpu() == self._styles[None]

    def push(self, grams: Mapping[str, Tensor], styles: Tensor) -> None:
        """Add a batch's (B, C, C) target Grams and its (B,) style identities, dropping the oldest beyond `size`."""
        for name, gram in grams.items():
            queued = self._grams.get(name, gram[:0])
            self._grams[name] = torch.cat([queued, gram.detach()])[-self.size:]
        self._styles = torch.cat([self._styles, styles.cpu()])[-self.size:]
