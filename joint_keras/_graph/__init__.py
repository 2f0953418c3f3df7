"""Submodels that feed each other: the submodel graph and its sources
(`graph`), what each submodel takes from `x` (`inputs`), and the split at a
shared representation for gradient-level strategies (`representation`).
"""
