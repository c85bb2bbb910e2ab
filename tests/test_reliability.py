"""The reliability gate: scores, conformal p-values, the gate's rule and the saved statistics."""

from pathlib import Path

import numpy as np
import pytest
from anymodal.service.reliability import ReliabilityModel, fit_reliability, gate

WIDTHS = [4, 6]


def _clusters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.array([[0.0] * 10, [4.0] * 10, [-4.0] * 10])
    return centres[labels] + rng.normal(size=(n, 10)), labels


def _fitted() -> ReliabilityModel:
    train, labels = _clusters(600, 0)
    val, _ = _clusters(300, 1)
    return fit_reliability(train, labels, val, WIDTHS)


def test_inputs_like_the_training_data_get_uniform_p_values() -> None:
    model = _fitted()
    test, _ = _clusters(2000, 2)
    p = model.p_value(model.score(test))
    assert p.min() > 0.0 and p.max() <= 1.0
    assert abs((p < 0.1).mean() - 0.1) < 0.03  # conformal: about alpha of clean inputs fall below alpha
    assert (p < 0.01).mean() < 0.03


def test_inputs_far_from_every_class_get_the_smallest_p_value() -> None:
    model = _fitted()
    far = np.full((5, 10), 40.0)
    between = np.full((5, 10), 2.0)  # between two class means: a mix no class looks like
    smallest = 1 / (1 + len(model.calibration))
    np.testing.assert_allclose(model.p_value(model.score(far)), smallest)
    assert (model.score(far) > model.score(between)).all()


def test_scores_grow_with_the_distance_and_p_values_fall() -> None:
    model = _fitted()
    rows = np.stack([np.full(10, d) for d in (0.0, 6.0, 12.0, 24.0)])
    scores = model.score(rows)
    assert np.all(np.diff(scores) > 0)
    assert np.all(np.diff(model.p_value(scores)) <= 0)


def test_a_wrong_probe_width_is_refused() -> None:
    with pytest.raises(ValueError, match="columns"):
        _fitted().score(np.zeros((2, 7)))


def test_save_and_load_give_the_same_scores(tmp_path: Path) -> None:
    model = _fitted()
    model.save(tmp_path / "gate.npz")
    loaded = ReliabilityModel.load(tmp_path / "gate.npz")
    rows, _ = _clusters(50, 3)
    np.testing.assert_allclose(loaded.score(rows), model.score(rows), rtol=1e-12)
    assert loaded.widths == WIDTHS


def test_the_gate_leaves_out_unreliable_inputs_unless_every_present_one_is() -> None:
    present = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 0], [1, 0, 1]], bool)
    p_values = np.array(
        [
            [0.001, 0.5, np.nan],  # the first is unreliable: fuse the second alone
            [0.5, 0.5, 0.5],  # all fine
            [np.nan, 0.001, np.nan],  # the only one is unreliable: fuse it anyway, flag the answer
            [np.nan, np.nan, 0.001],  # no gate for the first (NaN): it stays; the third goes
        ]
    )
    gated = gate(present, p_values, np.array([0.01, 0.01, 0.01]))
    np.testing.assert_array_equal(gated.usable, [[0, 1, 0], [1, 1, 1], [0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(gated.unreliable, [[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(gated.reliable, [True, True, False, True])


def test_alpha_zero_turns_the_gate_off() -> None:
    present = np.ones((2, 2), bool)
    gated = gate(present, np.full((2, 2), 1e-9), np.zeros(2))
    assert gated.usable.all() and not gated.unreliable.any() and gated.reliable.all()
