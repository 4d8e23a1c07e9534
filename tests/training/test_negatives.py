"""The contrastive term's memory queue of earlier style views (training.negatives)."""
from __future__ import annotations

import pytest
import torch

from training.negatives import GramQueue


def grams(first: float, count: int) -> dict[str, torch.Tensor]:
    return {"l": first + torch.arange(count, dtype=torch.float32)[:, None, None].expand(count, 2, 2)}


def test_the_queue_keeps_the_latest_views_and_marks_each_samples_own_style() -> None:
    queue = GramQueue(4)
    assert len(queue) == 0
    queue.push(grams(0, 3), torch.tensor([7, 8, 9]))
    queue.push(grams(3, 3), torch.tensor([10, 7, 11]))
    negatives, same_style = queue.negatives(torch.tensor([7, 12]))
    assert len(queue) == 4
    assert negatives["l"][:, 0, 0].tolist() == [2.0, 3.0, 4.0, 5.0]  # the oldest two dropped
    assert same_style.tolist() == [[False, False, True, False], [False, False, False, False]]
    queue.push({"l": torch.ones(1, 2, 2, requires_grad=True)}, torch.tensor([1]))
    assert not queue.negatives(torch.tensor([1]))[0]["l"].requires_grad


def test_a_queue_needs_room_for_a_view() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GramQueue(0)
