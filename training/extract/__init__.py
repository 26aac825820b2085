"""Relation extraction: DGCNN encoder + "half-pointer, half-tagging" probabilistic graph."""
