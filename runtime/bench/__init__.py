"""`chexplain bench` without torch: timing statistics, the cases timed stage by stage, the
machine's description and the result tables."""
