"""Model ladders: named rungs (model sizes as data) with one registry, plus FLOPs accounting."""
