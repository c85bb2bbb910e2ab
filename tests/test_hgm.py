import pytest
import torch

from training.hgm import HeadGradientProjector


def _features(rows: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)).abs()


def test_projector_starts_as_identity_and_leaves_the_first_gradient_alone() -> None:
    projector = HeadGradientProjector(8, alpha=1.0)
    grad = torch.randn(3, 8)
    projected = grad.clone()
    projector.project(projected)
    assert torch.equal(projected, grad)


def test_after_an_update_the_projector_annihilates_the_batch_mean_feature() -> None:
    projector = HeadGradientProjector(16, alpha=1e-3)
    features = _features(32, 16, seed=0)
    r = features.mean(0, keepdim=True).double()
    projector.update(features)
    assert (projector.P @ r.T).norm() < 1e-3 * r.norm()


def test_update_uses_a_scalar_denominator_and_keeps_p_symmetric_and_contracting() -> None:
    projector = HeadGradientProjector(16, alpha=1.0)
    for seed in range(20):
        projector.update(_features(8, 16, seed))
    P = projector.P
    assert torch.allclose(P, P.T, atol=1e-12)
    eigenvalues = torch.linalg.eigvalsh(P)
    assert eigenvalues.min() > -1e-9 and eigenvalues.max() <= 1.0 + 1e-9


def test_projected_step_leaves_the_heads_output_on_earlier_features_unchanged() -> None:
    """A step with grad P moves the head's logits on the earlier modality's mean feature by
    (to first order) nothing, while an unprojected step moves them."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 5)
    earlier = _features(64, 16, seed=1)
    r = earlier.mean(0, keepdim=True)
    projector = HeadGradientProjector(16, alpha=1e-4)
    projector.update(earlier)

    later = _features(64, 16, seed=2) + torch.linspace(0, 1, 16)  # another modality's features
    loss = torch.nn.functional.cross_entropy(head(later), torch.randint(0, 5, (64,)))
    grad = torch.autograd.grad(loss, head.weight)[0]
    projected = grad.clone()
    projector.project(projected)

    lr = 0.1
    moved_plain = (lr * grad @ r.T).norm()
    moved_projected = (lr * projected @ r.T).norm()
    assert moved_plain > 1e-3
    assert moved_projected < 1e-3 * moved_plain
    assert projected.norm() > 0.1 * grad.norm()  # it still learns, in other directions


def test_alpha_must_be_positive() -> None:
    with pytest.raises(ValueError):
        HeadGradientProjector(4, alpha=0.0)
