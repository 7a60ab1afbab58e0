"""Validation (DESIGN §5): ``validate`` (parity per runtime, distortion, accuracy, latency), the
side-by-side timing and ``profile`` (speed.py), the sweep's evaluator (evaluate.py).

parity.py, latency.py, accuracy.py and inputs.py know nothing of any runtime but the small
``Runner`` interface; validation.py turns a target into runners through runtimes/registry.py.
"""
