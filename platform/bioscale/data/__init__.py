"""Data: the manifest contract, compound groups, diets, synthetic generators and Ray Data pipelines."""
