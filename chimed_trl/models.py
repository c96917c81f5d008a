"""Deprecated: moved to :mod:`chimed_trl.modeling.load` (the one home for loading). Re-exported so that
``from chimed_trl.models import load_model`` keeps working."""

import warnings

from chimed_trl.modeling.load import (  # noqa: F401
    _from_hub_or_local,
    _looks_local,
    check_model_source,
    load_config,
    load_model,
    load_tokenizer,
    model_init_kwargs,
    rope_parameters,
)

warnings.warn(
    "chimed_trl.models is deprecated: import from chimed_trl.modeling.load", DeprecationWarning, stacklevel=2
)
