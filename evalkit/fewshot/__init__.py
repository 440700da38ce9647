"""Few-shot example draws and joins: lm-eval v0.2.0's shuffle-and-sample (:mod:`.v020`) and lm-eval 0.4's
samplers (:mod:`.lmeval`). Pure: documents, split and seed in, contexts and example ids out.

Imports: May import ``evalkit.types`` only. No torch.
"""
