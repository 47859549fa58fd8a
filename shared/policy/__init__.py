"""Split-selection policies: I-SplitEE, its audited and discounted variants, the baselines.

Pure logic: no I/O, no torch. Arms are indices 0..K-1 into the model's exits, shallowest
first; the last arm is the final classifier. Build a policy by name with :func:`build_policy`
(the names are :data:`POLICY_SPECS`, one entry each in :mod:`shared.policy.registry`);
docs/bandit.md derives why the estimates are consistent and what the referee guarantees.
"""

from shared.policy.audited import AuditedSplitEE
from shared.policy.base import Policy
from shared.policy.baselines import FixedSplit, OffloadAll, RandomSplit
from shared.policy.decision import BanditError, Decision
from shared.policy.referee import THRESHOLDS, Referee
from shared.policy.registry import (
    POLICY_SPECS,
    SPECS,
    PolicySpec,
    build_policy,
    find_spec,
    listing,
    options_for,
    policy_from_state,
    specs_taking,
    with_first_arm,
)
from shared.policy.ucb import DiscountedUCB, ISplitEE
from shared.policy.wilson import wilson_audits_needed, wilson_bounds

__all__ = [
    "POLICY_SPECS",
    "SPECS",
    "THRESHOLDS",
    "AuditedSplitEE",
    "BanditError",
    "Decision",
    "DiscountedUCB",
    "FixedSplit",
    "ISplitEE",
    "OffloadAll",
    "Policy",
    "PolicySpec",
    "RandomSplit",
    "Referee",
    "build_policy",
    "find_spec",
    "listing",
    "options_for",
    "policy_from_state",
    "specs_taking",
    "wilson_audits_needed",
    "wilson_bounds",
    "with_first_arm",
]
