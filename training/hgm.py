"""Head gradient modification (HGM), MLA's guard against the shared head forgetting one modality
while it learns the next, and the head's optimizer that applies it.

The head is a linear layer; it is handled as one augmented weight A = [W | b] (classes x (D+1))
acting on augmented features [f, 1], so the bias is protected like the weight. An OWM /
recursive-least-squares projector P ((D+1) x (D+1), starting at I) remembers the directions earlier
steps used. After the step of modality m, with r the batch mean of m's detached augmented
features, normalised to unit length so that `alpha` does not depend on the features' scale:

    k = P r^T,    P <- P - k k^T / (alpha + r k)        (r k is a scalar)

The head then moves by -lr * V P, where V is the momentum buffer: the projection applies to the
update the optimizer really takes, so momentum cannot carry unprojected directions back in.
`alpha` sets how fast a direction closes: after n steps along the same r, P keeps
alpha / (alpha + n) of it, while directions no modality used stay open.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class HeadGradientProjector:
    def __init__(self, feature_dim: int, alpha: float) -> None:
        if alpha <= 0:
            raise ValueError("alpha must be positive")
        self.alpha = alpha
        self.P = torch.eye(feature_dim + 1, dtype=torch.float64)

    @torch.no_grad()
    def project(self, update: torch.Tensor) -> torch.Tensor:
        """The update (classes x (D+1)) with the protected directions taken out."""
        return (update.to(torch.float64) @ self.P).to(update.dtype)

    @torch.no_grad()
    def update(self, features: torch.Tensor, alpha: float | None = None) -> None:
        """Fold in the batch (B x D) of features the last step trained on; a smaller `alpha` than
        the projector's own closes their direction further."""
        r = augment(features.detach().to(torch.float64)).mean(dim=0, keepdim=True)
        r = r / r.norm()
        k = self.P @ r.T
        self.P -= (k @ k.T) / ((self.alpha if alpha is None else alpha) + (r @ k).item())


def augment(features: torch.Tensor) -> torch.Tensor:
    """[f, 1]: the features with the constant input the bias multiplies."""
    return torch.cat([features, torch.ones_like(features[:, :1])], dim=1)


class HeadOptimizer:
    """SGD with momentum on the head's augmented weight, the step projected by HGM when given a
    projector. No weight decay: decay would move the head along the directions HGM protects."""

    def __init__(
        self, head: nn.Linear, lr: float, momentum: float, projector: HeadGradientProjector | None
    ) -> None:
        self.head = head
        self.lr = lr
        self.momentum = momentum
        self.projector = projector
        self.velocity = torch.zeros(head.out_features, head.in_features + 1, dtype=head.weight.dtype)

    def zero_grad(self) -> None:
        self.head.zero_grad(set_to_none=True)

    def anneal(self, base_lr: float, epoch: int, epochs: int) -> None:
        """The learning rate after `epoch` of `epochs`: cosine from `base_lr` down to 0, as the
        encoders' schedule."""
        self.lr = base_lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))

    @torch.no_grad()
    def step(self) -> float:
        """Take one step; returns the share of the head gradient's norm that HGM keeps,
        |grad P| / |grad| (1.0 without HGM)."""
        if self.head.weight.grad is None:
            return 1.0
        grad = torch.cat([self.head.weight.grad, self.head.bias.grad[:, None]], dim=1)
        self.velocity.mul_(self.momentum).add_(grad)
        update = self.velocity
        kept = 1.0
        if self.projector is not None:
            update = self.projector.project(self.velocity)
            kept = float(self.projector.project(grad).norm() / grad.norm().clamp_min(1e-12))
        self.head.weight.sub_(self.lr * update[:, :-1])
        self.head.bias.sub_(self.lr * update[:, -1])
        return kept
