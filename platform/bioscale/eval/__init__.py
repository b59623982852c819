"""Evaluation: frozen-embedding probes on the fixed probe sets, alignment metrics, and a trial's
final evaluation (``bioscale.eval.final``).

Importing the package registers every probe readout and evaluation task into the registries of
``bioscale.eval.config`` (``READOUTS``, ``TASKS``), which ``ProbeConfig`` checks names against.
"""

from bioscale.eval import readout, tasks  # noqa: F401 - registers the readouts and the tasks
