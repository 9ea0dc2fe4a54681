"""Pure math of the estimators: arrays in, arrays out, no estimator state.

Each function here is tested against a slow, obvious reference in ``tests/test_math_*.py``.
"""
