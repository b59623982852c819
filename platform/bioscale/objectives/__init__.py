"""Training objectives: one module each, one registry (``bioscale.objectives.registry``)."""
