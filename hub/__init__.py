"""Sharing models: saved directories, the Hugging Face Hub, exports to timm and transformers."""
