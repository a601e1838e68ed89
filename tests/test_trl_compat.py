"""Every TRL (or transformers) internal trl-ext relies on is still where `trl_ext.trainer.compat` says it is.

pyproject pins `trl>=1.16,<1.17`. Before moving the pin, run this file: a failure names the internal, what changed,
why we rely on it, and the installed TRL version; re-read that TRL code, then fix the helper in compat.py that
touches it (and the override, for an overridden method).
"""

import pytest
import transformers
import trl
from trl import GRPOTrainer

from trl_ext import DPORoundsTrainer, PPOTrainer, RAFTTrainer
from trl_ext.trainer.compat import INTERNALS, Internal, check_internals

VERSIONS = f"TRL {trl.__version__}, transformers {transformers.__version__}"


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.where)
def test_internal_is_where_trl_ext_relies_on_it(internal: Internal):
    problem = internal.problem()
    assert problem is None, f"{VERSIONS}: {problem}; trl-ext relies on it because {internal.why}"


def test_check_internals_reports_nothing_on_the_pinned_trl():
    assert check_internals() == [], VERSIONS


def test_a_moved_renamed_or_rewritten_internal_is_reported():
    """The checks can fail: each kind of change TRL could make is caught and named."""
    moved = Internal(GRPOTrainer, "_generate_and_score", "a method that is not there")
    assert moved.problem() == "trl.trainer.grpo_trainer.GRPOTrainer._generate_and_score no longer exists"
    changed = Internal(GRPOTrainer, "_compute_loss", "a signature we do not match", parameters=("self", "batch"))
    assert "now takes (self, model, ...), not (self, batch, ...)" in changed.problem()
    unset = Internal(GRPOTrainer, "_no_such_attribute", "an attribute __init__ never sets", assigned_in="__init__")
    assert "is no longer set in GRPOTrainer.__init__" in unset.problem()
    rewritten = Internal(GRPOTrainer, "_generate", "a line its body lacks", source_contains=("return None  # gone",))
    assert "no longer contains 'return None  # gone'" in rewritten.problem()


@pytest.mark.parametrize("trainer_class", [RAFTTrainer, DPORoundsTrainer, PPOTrainer])
def test_every_private_member_our_trainers_override_is_listed(trainer_class):
    """A private method or class attribute of TRL's trainer that ours redefines is an internal we rely on (and one
    we would override by accident when a TRL release adds a member of the same name)."""
    parent = trainer_class.__mro__[1]
    listed = {i.name for i in INTERNALS if isinstance(i.owner, type) and issubclass(trainer_class, i.owner)}
    private = [name for name in vars(trainer_class) if name.startswith("_") and not name.startswith("__")]
    unlisted = sorted(name for name in private if hasattr(parent, name) and name not in listed)
    assert not unlisted, (
        f"{VERSIONS}: {trainer_class.__name__} overrides {parent.__name__}'s {unlisted}; list them in compat.INTERNALS"
    )
