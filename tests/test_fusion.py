import numpy as np
import pytest
from anymodal.service.fusion import entropy, fuse, softmax
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays


def paper_rule(logits: np.ndarray) -> np.ndarray:
    """MLA's rule for one sample written out plainly: w_m proportional to exp(-entropy_m)."""
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    entropies = -(probabilities * np.log(probabilities)).sum(axis=1)
    weights = np.exp(-entropies) / np.exp(-entropies).sum()
    return (weights[:, None] * logits).sum(axis=0)


def test_equals_the_papers_rule_at_unit_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3, 10))
    fused = fuse(logits, np.ones((6, 3), bool))
    expected = np.stack([paper_rule(sample) for sample in logits])
    np.testing.assert_allclose(fused.logits, expected, rtol=1e-5, atol=1e-5)


def test_absent_modalities_get_no_weight_and_do_not_vote() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 3, 5))
    present = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1]], bool)
    garbage = logits.copy()
    garbage[~present] = np.nan  # whatever an absent slot holds must not matter
    fused = fuse(garbage, present)
    assert np.all(fused.weights[~present] == 0)
    assert np.isnan(fused.entropies[~present]).all()
    np.testing.assert_allclose(fused.logits[1], logits[1, 0], rtol=1e-6)
    only_present = fuse(logits[0:1, :2], np.ones((1, 2), bool))
    np.testing.assert_allclose(fused.logits[0], only_present.logits[0], rtol=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    logits=arrays(np.float64, (5, 3, 4), elements=st.floats(-1e6, 1e6)),
    present=arrays(bool, (5, 3)),
    rule=st.sampled_from(["entropy", "mean"]),
)
def test_weights_sum_to_one_and_stay_finite_for_extreme_logits(logits, present, rule) -> None:
    present[:, 0] |= ~present.any(axis=1)  # every sample keeps at least one modality
    fused = fuse(logits, present, rule=rule)
    np.testing.assert_allclose(fused.weights.sum(axis=1), 1.0, rtol=1e-5)
    assert np.isfinite(fused.logits).all()
    assert (fused.weights >= 0).all()
    assert np.isfinite(fused.entropies[present]).all()


def test_the_more_certain_modality_gets_the_larger_weight() -> None:
    certain = np.array([8.0, 0, 0, 0])
    unsure = np.array([0.3, 0.2, 0, 0])
    fused = fuse(np.stack([certain, unsure])[None], np.ones((1, 2), bool))
    assert fused.weights[0, 0] > 0.5 > fused.weights[0, 1]


def test_a_higher_temperature_lowers_a_modalitys_weight() -> None:
    logits = np.array([[[3.0, 0, 0], [3.0, 0, 0]]])
    fused = fuse(logits, np.ones((1, 2), bool), temperatures=np.array([1.0, 4.0]))
    assert fused.weights[0, 0] > fused.weights[0, 1]
    assert fused.entropies[0, 1] > fused.entropies[0, 0]


def test_mean_rule_weighs_present_modalities_equally() -> None:
    logits = np.random.default_rng(2).normal(size=(2, 3, 4))
    present = np.array([[1, 1, 1], [1, 0, 1]], bool)
    fused = fuse(logits, present, rule="mean")
    np.testing.assert_allclose(fused.weights, [[1 / 3] * 3, [0.5, 0, 0.5]], rtol=1e-6)


def test_every_sample_needs_a_present_modality() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fuse(np.zeros((2, 2, 3)), np.array([[1, 0], [0, 0]], bool))


def test_entropy_of_uniform_and_one_hot() -> None:
    assert entropy(np.zeros(10)) == pytest.approx(np.log(10))
    assert entropy(np.array([1e9, 0, 0])) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(softmax(np.array([1e300, -1e300])), [1.0, 0.0])


def test_count_temperatures_rescale_by_the_number_of_fused_modalities_without_changing_labels() -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(3, 3, 5)) * 3
    present = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]], bool)
    plain = fuse(logits, present)
    scaled = fuse(logits, present, count_temperatures=np.array([1.0, 2.0, 0.5]))
    np.testing.assert_allclose(scaled.logits, plain.logits / np.array([[1.0], [2.0], [0.5]]), rtol=1e-5)
    np.testing.assert_array_equal(scaled.logits.argmax(1), plain.logits.argmax(1))
    np.testing.assert_allclose(scaled.weights, plain.weights)
