"""Benchmarks: trigsync against lsyncd and plain rsync, all pushing to one local rsync daemon.

Run ``python -m bench`` (or ``python -m bench --quick`` for a fast sanity run). Every
number is measured in the same run on the same machine, so the ratios survive a noisy
host better than the absolute figures do.
"""
