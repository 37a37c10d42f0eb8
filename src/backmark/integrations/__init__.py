"""Framework integrations: mark a model inside someone else's training loop (docs/integrations.md).

- :mod:`backmark.integrations.lightning`: ``TriggerMixCallback``, a PyTorch Lightning
  callback (``pip install 'backmark[lightning]'``);
- :mod:`backmark.integrations.hf`: ``TriggerMixTrainer`` / ``TriggerMixin`` and
  ``TriggerAccuracyCallback`` for the Hugging Face ``transformers`` Trainer
  (``pip install 'backmark[hf]'``).

Both append a :class:`backmark.TriggerMixer`'s k triggers to every training batch (never to
evaluation batches) and report trigger accuracy after every epoch. Importing this package
imports neither framework; importing a submodule without its framework raises
MissingDependency naming the extra.
"""
