"""Adapters that plug osnet-zoo into other libraries' APIs, one module per library. None of them imports the
other library: each follows its interface by shape, so ``import osnet_zoo`` never loads them and installing
the other library is the user's choice.

* :mod:`osnet_zoo.integrations.boxmot`: ``BoxmotAppearanceModel``, an appearance model boxmot's trackers take as
  ``reid_model`` (docs/trackers.md).
"""
