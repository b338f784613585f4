"""Calibration metrics against values computed by hand, and on large synthetic samples whose
calibration is known."""

import math

import numpy as np
import pytest

from mlff.train import calibration as C


def test_hand_computed_values():
    sigma, error = np.array([1.0, 2.0]), np.array([2.0, -2.0])
    assert C.recalibration_factor(sigma, error) == pytest.approx(math.sqrt((4 + 1) / 2))
    expected_nll = np.mean([0.5 * math.log(2 * math.pi) + 2.0, 0.5 * math.log(8 * math.pi) + 0.5])
    assert C.gaussian_nll(sigma, error) == pytest.approx(expected_nll)
    # every error is zero: all fall inside every interval, observed = 1 at every level
    assert C.miscalibration_area(np.ones(10), np.zeros(10)) == pytest.approx(0.5)
    assert C.spearman([0.1, 0.2, 0.3, 0.4], [0.0, -0.5, 1.0, 3.0]) == pytest.approx(1.0)
    assert C.spearman([0.1, 0.2, 0.3, 0.4], [3.0, 1.0, 0.5, 0.0]) == pytest.approx(-1.0)


def test_gaussian_errors_are_calibrated_and_recalibration_fixes_a_scale():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.05, 0.5, 200_000)
    error = rng.normal(0.0, sigma)
    assert C.miscalibration_area(sigma, error) < 0.005
    assert C.recalibration_factor(sigma, error) == pytest.approx(1.0, abs=0.01)
    assert C.spearman(sigma, error) > 0.3
    over = 0.5 * sigma  # over-confident by a factor 2
    s = C.recalibration_factor(over, error)
    assert s == pytest.approx(2.0, rel=0.01)
    assert C.miscalibration_area(over, error) > 0.1
    assert C.miscalibration_area(s * over, error) < 0.005
    assert C.gaussian_nll(s * over, error) < C.gaussian_nll(over, error)


def test_force_report_aggregates_atoms_and_structures():
    std = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [4.0, 0, 0]])
    err = np.array([[0.5, 0, 0], [0, 1.0, 0], [0, 0, 2.0], [0, 3.0, 0]])
    report = C.force_uncertainty_report(std, err, np.array([0, 0, 1, 2]), std_scale=2.0)
    assert report["spearman_per_atom"] == pytest.approx(1.0)
    # structures: mean std 1.5, 3, 4; mean error 0.75, 2, 3 -> perfectly ranked
    assert report["spearman_per_structure"] == pytest.approx(1.0)
    assert report["n_structures"] == 3 and report["std_scale"] == 2.0
    assert report["components_recalibrated"]["rms_sigma_over_rms_error"] == pytest.approx(
        2 * report["components_raw"]["rms_sigma_over_rms_error"])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same non-zero size"):
        C.metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        C.metrics([1.0, float("nan")], [1.0, 1.0])
