"""One registry of policies: every name a user may give, its class and the options it takes.

The node's configuration and runtime settings, the simulator and its CLI all read this table
(:data:`SPECS`), so adding a policy is one entry here. A spec is a name, or a name with an
argument (``fixed:BLOCK``). A saved state names its class (``Policy.name``), found here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.cost import RewardModel
from shared.policy.audited import AuditedSplitEE
from shared.policy.base import Policy
from shared.policy.baselines import FixedSplit, OffloadAll, RandomSplit
from shared.policy.checks import is_index
from shared.policy.decision import BanditError
from shared.policy.state import DELETE_HINT, parse_state
from shared.policy.stats import KEYS
from shared.policy.ucb import DiscountedUCB, ISplitEE

__all__ = [
    "OPTIONS",
    "POLICY_SPECS",
    "SPECS",
    "PolicySpec",
    "build_policy",
    "find_spec",
    "listing",
    "options_for",
    "policy_from_state",
    "specs_taking",
    "with_first_arm",
]

OPTIONS = ("c", "discount", "target", "min_audit_rate")
"""Options a spec may take (``seed`` goes to every policy and is used by the random one)."""


Build = Callable[[RewardModel, str | None, dict[str, Any], int], Policy]
"""``(rewards, argument, options, seed) -> Policy``: ``argument`` the text after the colon
(None without one), ``options`` those of :data:`OPTIONS` given that the entry takes."""


@dataclass(frozen=True)
class PolicySpec:
    """A name users give, its class, which of :data:`OPTIONS` it takes, how to build it.

    ``argument``: the name of its argument (``BLOCK`` in ``fixed:BLOCK``), None when it has
    none. ``build``: None builds ``cls(rewards, **options)``. ``compared``: in the
    simulator's default table. ``cls.name`` is what its saved states say.
    """

    name: str
    cls: type[Policy]
    options: tuple[str, ...] = ()
    argument: str | None = None
    compared: bool = True
    build: Build | None = None

    @property
    def spec(self) -> str:
        """How users write it: ``isplitee``, ``fixed:BLOCK``."""
        return self.name if self.argument is None else f"{self.name}:{self.argument}"

    def make(
        self, rewards: RewardModel, argument: str | None, options: dict[str, Any], seed: int
    ) -> Policy:
        """The policy, with its ``options`` (and ``seed`` where it draws at random)."""
        if self.build is None:
            return self.cls(rewards, **options)  # type: ignore[call-arg]
        return self.build(rewards, argument, options, seed)


def _fixed(rewards: RewardModel, text: str | None, options: dict[str, Any], seed: int) -> Policy:
    blocks, spec = rewards.cost.blocks, f"fixed:{text}"
    if text is not None and text.strip().isdigit() and int(text) in blocks:
        return FixedSplit(rewards, arm=blocks.index(int(text)), label=spec)
    raise ValueError(f"policy {spec!r}: BLOCK should be one of the model's blocks {list(blocks)}")


def _discounted_audits(rm: RewardModel, _: str | None, o: dict[str, Any], seed: int) -> Policy:
    return AuditedSplitEE(rm, **{"discount": AuditedSplitEE.DEFAULT_DISCOUNT, **o})


_AUDITED = ("c", "target", "min_audit_rate")

SPECS: tuple[PolicySpec, ...] = (
    PolicySpec("isplitee", AuditedSplitEE, _AUDITED),
    PolicySpec(
        "isplitee-nonstationary",
        AuditedSplitEE,
        (*_AUDITED, "discount"),
        build=_discounted_audits,
    ),
    PolicySpec("isplitee-paper", ISplitEE, ("c",)),
    PolicySpec("isplitee-paper-nonstationary", DiscountedUCB, ("c", "discount"), compared=False),
    PolicySpec("offload-all", OffloadAll),
    PolicySpec("fixed", FixedSplit, argument="BLOCK", build=_fixed),
    PolicySpec(
        "final",
        FixedSplit,
        build=lambda rm, _, o, seed: FixedSplit(rm, arm=rm.last, label="final"),
    ),
    PolicySpec("random", RandomSplit, build=lambda rm, _, o, seed: RandomSplit(rm, seed=seed)),
)
"""Every policy a user can name, in the order help texts list them."""

POLICY_SPECS = tuple(entry.spec for entry in SPECS)
"""How users write each (``fixed:BLOCK`` for the fixed splits)."""

_CLASSES: Mapping[str, type[Policy]] = {entry.cls.name: entry.cls for entry in SPECS}
"""The class a saved state names (``Policy.name``)."""


def find_spec(spec: str) -> tuple[PolicySpec, str | None]:
    """The registry entry ``spec`` names and its argument's text (None: it has none); an
    unknown name is a ValueError."""
    name, colon, text = spec.partition(":") if isinstance(spec, str) else (spec, "", "")
    for entry in SPECS:
        if entry.name == name and (entry.argument is not None) == bool(colon):
            return entry, text if colon else None
    raise ValueError(f"unknown policy {spec!r}: use one of {', '.join(POLICY_SPECS)}")


def listing() -> str:
    """The specs as help texts and errors list them: ``isplitee, ..., random or fixed:BLOCK``."""
    plain = [entry.spec for entry in SPECS if entry.argument is None]
    with_argument = [entry.spec for entry in SPECS if entry.argument is not None]
    return f"{', '.join(plain)} or {' or '.join(with_argument)}"


def specs_taking(option: str) -> tuple[str, ...]:
    """The policies that take ``option`` (one of :data:`OPTIONS`)."""
    return tuple(entry.spec for entry in SPECS if option in entry.options)


def options_for(spec: str, **available: Any) -> dict[str, Any]:
    """Of the ``available`` options (None: the policy's default), those ``spec`` takes: how a
    node or the simulator passes its settings on to whichever policy runs."""
    entry, _ = find_spec(spec)
    return {k: v for k, v in available.items() if k in entry.options or k == "seed"}


def build_policy(
    spec: str,
    rewards: RewardModel,
    *,
    c: float | None = None,
    discount: float | None = None,
    target: float | None = None,
    min_audit_rate: float | None = None,
    seed: int = 0,
) -> Policy:
    """The policy named by ``spec`` (one of :data:`POLICY_SPECS`, BLOCK one of the cost
    model's blocks) for a reward model.

    ``c``, ``discount``, ``target`` (the largest share of frames an exit may answer
    differently from the final classifier) and ``min_audit_rate`` default to the policy's own;
    giving one to a policy that has no such setting is an error, not ignored.
    """
    entry, text = find_spec(spec)
    given = {"c": c, "discount": discount, "target": target, "min_audit_rate": min_audit_rate}
    for option, value in given.items():
        if value is not None and option not in entry.options:
            raise ValueError(_not_taken(spec, option))
    options = {k: v for k, v in given.items() if k in entry.options and v is not None}
    return entry.make(rewards, text, options, seed)


def _not_taken(spec: str, option: str) -> str:
    takers = " and ".join(specs_taking(option))
    if option == "c":
        return f"policy {spec!r} does not explore: c applies to isplitee policies only"
    if option == "discount":
        return f"policy {spec!r} does not discount: discount applies to {takers}"
    return f"policy {spec!r} has no referee: {option} applies to {takers}"


def policy_from_state(state: Mapping[str, Any], rewards: RewardModel) -> Policy:
    """Rebuild a policy from :meth:`Policy.to_state` output (e.g. read back from JSON), priced
    with ``rewards``. Anything wrong with the state is a :class:`BanditError`, raised here
    rather than at a later decision."""
    checked = parse_state(state, rewards)
    cls = _CLASSES.get(checked.policy)
    try:
        if cls is None:
            raise ValueError(f"unknown policy {checked.policy!r}")
        return cls.restore(checked, rewards)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise BanditError(
            f"invalid bandit state ({type(exc).__name__}: {exc}); {DELETE_HINT}"
        ) from exc


def with_first_arm(state: Mapping[str, Any]) -> dict[str, Any]:
    """A saved state with one more arm in front, never observed: what a node that learnt
    without frame offload restores from when it gains the frame arm (block 0). Everything
    learnt about the model's exits is kept; decisions in flight are dropped."""
    out = dict(state)
    cls = _CLASSES.get(state.get("policy"))  # type: ignore[arg-type]
    if cls is None or not is_index(state.get("n_arms")):
        raise BanditError(f"invalid bandit state (policy {state.get('policy')!r}); {DELETE_HINT}")
    out["n_arms"] = state["n_arms"] + 1
    out["pending"] = []
    try:
        out["stats"] = {key: [0.0, *state["stats"][key]] for key in KEYS}
        params, extra = dict(state["params"]), dict(state["extra"])
        cls.widen(params, extra)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BanditError(
            f"invalid bandit state ({type(exc).__name__}: {exc}); {DELETE_HINT}"
        ) from exc
    out["params"], out["extra"] = params, extra
    return out
