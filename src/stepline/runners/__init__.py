"""Runners: the seam that starts, watches and stops a `run` step's processes."""
