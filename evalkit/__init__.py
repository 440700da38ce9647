"""evalkit: evaluate causal language models by log-likelihood, reproducing published zero-shot tables."""

__version__ = "0.1.0"
