import numpy as np
import pytest
import torch

from ttlib.discretize import QuantileDiscretizer, UniformDiscretizer, make_discretizer


def skewed(n=100_000, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.exponential(2.0, n), rng.lognormal(0, 1, n), rng.normal(0, 1, n)], 1)


def test_quantile_bins_hold_equal_mass():
    x = skewed()
    d = QuantileDiscretizer(100).fit(x)
    ids = d.encode(x)
    for j in range(x.shape[1]):
        counts = np.bincount(ids[:, j], minlength=100)
        assert np.all(np.abs(counts - 1000) <= 10), counts  # within ±1 % of N/K


def test_uniform_bins_have_equal_width():
    x = skewed()
    d = UniformDiscretizer(100).fit(x)
    w = np.diff(d.edges, axis=1)
    np.testing.assert_allclose(w, w[:, :1].repeat(100, 1), rtol=1e-9)
    np.testing.assert_allclose(d.edges[:, 0], x.min(0))
    np.testing.assert_allclose(d.edges[:, -1], x.max(0))


@pytest.mark.parametrize("kind", ["uniform", "quantile"])
def test_roundtrip_error_within_half_a_bin(kind):
    x = skewed(20_000)
    d = make_discretizer(kind, 100).fit(x)
    ids = d.encode(x)
    err = np.abs(d.decode(ids) - x)
    bound = 0.5 * np.take_along_axis(np.diff(d.edges, axis=1).T, ids, axis=0)
    assert np.all(err <= bound + 1e-9)


@pytest.mark.parametrize("kind", ["uniform", "quantile"])
def test_constant_column_and_out_of_range_are_safe(kind):
    rng = np.random.default_rng(1)
    x = np.stack([np.full(1000, 3.0), rng.normal(size=1000)], 1)
    d = make_discretizer(kind, 10).fit(x)
    out = d.decode(d.encode(x))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], 3.0)
    far = np.array([[3.0, -1e6], [3.0, 1e6]])
    ids = d.encode(far)
    assert ids[0, 1] == 0 and ids[1, 1] == 9  # clipped into the first / last bin


def test_decode_mean_statistic_is_closer_than_centre_on_skewed_data():
    x = skewed(50_000)[:, :1]
    d = UniformDiscretizer(20).fit(x)
    ids = d.encode(x)
    err_c = np.abs(d.decode(ids, statistic="centre") - x).mean()
    err_m = np.abs(d.decode(ids, statistic="mean") - x).mean()
    assert err_m < err_c


def test_expectation_of_a_bin_distribution():
    x = np.linspace(0, 1, 1001)[:, None].repeat(2, 1)
    d = UniformDiscretizer(10).fit(x)
    probs = torch.zeros(2, 11)
    probs[0, 2] = 1.0  # all mass on bin 2 → its centre 0.25
    probs[1, 0], probs[1, 9] = 0.5, 0.5  # half on each end → 0.5
    e = d.expectation(probs[None], dims=[0, 1])
    np.testing.assert_allclose(e.numpy()[0], [0.25, 0.5], atol=1e-6)
    probs_stop = torch.zeros(1, 1, 11)
    probs_stop[0, 0, 10] = 1.0  # stop-token mass is dropped, not renormalised
    assert float(d.expectation(probs_stop, dims=[0])) == 0.0


def test_state_dict_roundtrip_encodes_alike():
    x = skewed(5000)
    d = QuantileDiscretizer(50).fit(x)
    d2 = type(d).from_state_dict(d.state_dict())
    np.testing.assert_array_equal(d.encode(x), d2.encode(x))
    np.testing.assert_array_equal(d.edges, d2.edges)


def test_nan_input_is_rejected_with_the_dimension():
    x = skewed(100)
    x[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"dimensions \[2\]"):
        QuantileDiscretizer(10).fit(x)
