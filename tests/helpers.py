"""Small shared helpers for the tests."""

import numpy as np


def fitted_rate(h, err):
    """Slope of log(err) against log(h) (least squares)."""
    return float(np.polyfit(np.log(h), np.log(err), 1)[0])
