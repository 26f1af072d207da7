"""When a difference between two measurements is noise: the 95 % band of the difference of two per-frame
latency medians. Each median's standard error is 1.2533 sigma / sqrt(n), with sigma from the pooled latencies'
IQR (/1.349, robust to stalls) and n their count. Latencies of one run are correlated, so the band is a lower
bound. Figures made of the same steps (RTF, throughput, time to first frame) take the latency's relative band.
"""

from __future__ import annotations

import math

Z95 = 1.96
MEDIAN_SE = 1.2533  # standard error of a median = 1.2533 sigma / sqrt(n), for normal samples
IQR_SIGMA = 1.349  # IQR of a normal distribution, in sigmas
FOLLOW_LATENCY = {"frame_ms", "first_audio_ms", "first_frame_ms", "rtf", "rtf_with_codec", "throughput"}


def median_band(base: dict, candidate: dict) -> float | None:
    """Half-width of the 95 % band of the difference of two latency medians ({median, iqr, stdev, n})."""
    if not all(isinstance(x, dict) and x.get("n") for x in (base, candidate)):
        return None

    def standard_error(spread: dict) -> float:
        sigma = spread["iqr"] / IQR_SIGMA if spread.get("iqr") else spread.get("stdev", 0.0)
        return MEDIAN_SE * sigma / math.sqrt(spread["n"])

    return Z95 * math.hypot(standard_error(base), standard_error(candidate))


def relative_band(base: dict, candidate: dict) -> float | None:
    """median_band as a share of the base median."""
    band = median_band(base, candidate)
    return None if band is None or not base.get("median") else band / base["median"]
