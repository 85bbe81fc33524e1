"""EDM samplers (Karras et al. 2022): deterministic Heun and its stochastic churn variant (issue 6)."""
