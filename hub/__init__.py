"""Sharing models: the Hugging Face Hub, model cards, exports to timm and transformers.

The model class knows nothing of the Hub: these functions wrap it from above.

- :func:`load_model`: the one way to load, from a run directory, a model directory or a Hub id;
- :func:`save_pretrained`, :func:`push_to_hub`, :func:`push_directory`, :func:`pull`: a model
  directory with its card, on disk or on the Hub (:mod:`mimsdk.hub.pretrained`);
- :mod:`mimsdk.hub.card`: the model card, from :mod:`mimsdk.hub.describe` (a model's parts in words)
  and :mod:`mimsdk.hub.run_record` (a run directory's recipe, metrics and curve);
- :mod:`mimsdk.hub.client`: the Hub endpoint, repo ids, the client's errors as :class:`HubError`;
- :mod:`mimsdk.hub.timm_export`, :mod:`mimsdk.hub.transformers_export`: weights for timm and transformers.

These modules import ``huggingface_hub`` (and transformers, timm) only inside the functions that use them.
"""

from mimsdk.hub.errors import ExportError, HubError
from mimsdk.hub.pretrained import load_model, pull, push_directory, push_to_hub, save_pretrained

__all__ = ["ExportError", "HubError", "load_model", "pull", "push_directory", "push_to_hub", "save_pretrained"]
