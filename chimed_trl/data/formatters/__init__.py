"""One formatter per raw schema: raw row -> canonical record(s). Registered by name.

A formatter is a ``convert(row, ctx)`` function returning a record, a list of records, or a
:class:`Skip` with a reason; it raises :class:`FieldError` for a missing or wrongly typed field and
the caller adds the file and line. File-shaped sources (HET-MC ``.dialog``, Safety-Prompts' JSON
keyed by category) also register a ``reader``. One module per family: :mod:`.corpora` (training corpora),
:mod:`.dialogues` (multi-turn dialogue files), :mod:`.benchmarks` (evaluation sets); :mod:`.base` holds the registry.
"""

from chimed_trl.data.formatters.base import (
    FORMATTERS,
    Context,
    FieldError,
    Formatter,
    Skip,
    field,
    get_formatter,
    register,
)
from chimed_trl.data.formatters.benchmarks import (  # importing registers them
    CCKS2019_TYPES,
    attitude_scale,
    bio_to_spans,
    ccks2019,
    ceval,
    chimst,
    cmmlu_csv,
    medqa_mcmle,
)
from chimed_trl.data.formatters.corpora import (  # importing registers them
    chimed_qa,
    chimed_qa_ranked,
    cmd_pretrain,
    cmd_reward,
    cmd_sft,
    sharegpt,
    sharegpt_preference,
    toyhom_csv,
)
from chimed_trl.data.formatters.dialogues import (  # importing registers them
    het_mc,
    het_mc_eval,
    meddialog_zh,
    read_het_mc,
    read_meddialog,
    read_safety_prompts,
    safety_prompts,
)

__all__ = [
    "FORMATTERS",
    "Context",
    "FieldError",
    "Formatter",
    "Skip",
    "field",
    "get_formatter",
    "register",
    "cmd_pretrain",
    "cmd_sft",
    "cmd_reward",
    "toyhom_csv",
    "sharegpt",
    "sharegpt_preference",
    "chimed_qa",
    "chimed_qa_ranked",
    "read_het_mc",
    "het_mc",
    "het_mc_eval",
    "meddialog_zh",
    "read_meddialog",
    "read_safety_prompts",
    "safety_prompts",
    "cmmlu_csv",
    "ceval",
    "medqa_mcmle",
    "ccks2019",
    "bio_to_spans",
    "chimst",
    "attitude_scale",
    "CCKS2019_TYPES",
]
