"""Sharing models: saved directories, the Hugging Face Hub, exports to timm and transformers.

- :mod:`mimsdk.hub.mixin`: ``save_pretrained`` / ``push_to_hub`` / ``from_pretrained`` on ``MaskedAutoencoder``
  (``huggingface_hub``'s ModelHubMixin);
- :mod:`mimsdk.hub.pretrained`: the work behind them, plus ``pull`` and the errors (:class:`HubError`);
- :mod:`mimsdk.hub.card`: the model card;
- :mod:`mimsdk.hub.timm_export`, :mod:`mimsdk.hub.transformers_export`: weights for timm and transformers.
"""
