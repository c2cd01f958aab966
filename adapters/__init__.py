"""Modality adapters, one module (or sub-package) each, imported on first use so a radiology user never loads open3d.

Each registers its :class:`~mimsdk.adapter.Adapter` subclass with ``@ADAPTERS.register("<name>")``;
:data:`mimsdk.registry.ADAPTERS` finds it by module name, so adding a modality is adding a module here
(and its recipe). An adapter never imports another adapter.
"""
