"""Recipes that ship with mimsdk: one YAML file each (``mimsdk recipes`` lists them)."""
