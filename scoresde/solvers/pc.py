"""Predictor-corrector and adaptive reverse-SDE samplers of the score-SDE papers (issue 6)."""
