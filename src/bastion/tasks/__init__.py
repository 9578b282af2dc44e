"""Governed unattended runs: task specs, the task store, schedules, triggers and the run engine.

``spec`` holds the typed definitions and the :class:`~bastion.tasks.spec.RunStarter` seam the
scheduler calls; the run engine implements it.
"""
