"""Scaling-law analysis: laws (one registry), robust fits, run tables from MLflow, plots, reports.

Reads tables and MLflow runs; never imports ``data``, ``models`` or ``train``.
"""
