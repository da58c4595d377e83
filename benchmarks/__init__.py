"""Benchmarks of ``invertible`` against its peers (zuko, nflows, normflows).

Run ``python -m benchmarks --help`` from the repository root. Peers are installed with
``pip install --no-deps -r requirements-peers.txt`` (never lets pip touch torch).
"""
