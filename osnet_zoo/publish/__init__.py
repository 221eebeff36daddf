"""Publishing the zoo: converting reference checkpoints into Hub folders (``convert``), mirroring every tag to
the Hub (``mirror``), checking the caches (``verify``) and pushing. Only whoever publishes the zoo runs these
(``python -m osnet_zoo.weights convert | push | mirror | verify``); nothing in training, inference or the engine
imports this package (tests/test_structure.py). The model folder they write is ``osnet_zoo.models.folder``'s,
the one a training run writes too.
"""
