"""Measurement: fills and removal curves, statistics, model-parameter randomisation, localisation against regions,
probes, SpRAy, and the audit of one image that ties the maps to its curves."""
