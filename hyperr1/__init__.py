"""hyperr1: hyperbolic representations for R1-style reasoning models.

``import hyperr1`` registers the policy's model type ``"hyperr1"`` with transformers' Auto classes,
so that ``AutoModelForSeq2SeqLM.from_pretrained(path)`` loads a policy saved by ``save_pretrained``
(and ``AutoConfig.from_pretrained(path)`` its config). The modules are imported on their own:
``hyperr1.geometry``, ``hyperr1.nn``, ``hyperr1.optim``, ``hyperr1.embeddings``, ...
"""

__version__ = "0.1.0"

# After __version__, which modules read at import time. The registration is model.py's last lines;
# it costs transformers' import (about 2 s) on every `import hyperr1.*`.
from hyperr1 import model as _model  # noqa: E402, F401
