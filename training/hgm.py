"""Head gradient modification (HGM), MLA's guard against the shared head forgetting one modality
while it learns the next.

An OWM / recursive-least-squares projector P (D x D, starting at I) is kept for the head's weight.
After the step of modality m, with r the batch mean of m's detached features (1 x D):

    k = P r^T,    P <- P - k k^T / (alpha + r k)        (r k is a scalar)

and the head's weight gradient of the next step is replaced by grad P. P r^T shrinks towards 0, so
the head moves in directions that leave its output on earlier modalities' features unchanged.
"""

from __future__ import annotations

import torch


class HeadGradientProjector:
    def __init__(self, feature_dim: int, alpha: float) -> None:
        if alpha <= 0:
            raise ValueError("alpha must be positive")
        self.alpha = alpha
        self.P = torch.eye(feature_dim, dtype=torch.float64)

    @torch.no_grad()
    def project(self, weight_grad: torch.Tensor) -> None:
        """Replace the head's weight gradient (classes x D) by grad P, in place."""
        weight_grad.copy_((weight_grad.to(torch.float64) @ self.P).to(weight_grad.dtype))

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Fold in the batch (B x D) of features the last step trained on."""
        r = features.detach().to(torch.float64).mean(dim=0, keepdim=True)
        k = self.P @ r.T
        self.P -= (k @ k.T) / (self.alpha + (r @ k).item())
