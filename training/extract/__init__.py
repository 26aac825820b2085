"""Relation extraction: DuIE/SKE loading, the DGCNN extractor, its training, export (with the IG gradient
graph) and evaluation."""
