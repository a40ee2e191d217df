"""Verdicts: the gates over an image set, and the comparisons of a candidate with its released baseline (faithfulness,
regions, probes, class by class)."""
