"""Exponential integrators and other few-step solvers (filled in by issue 6)."""
