"""Which methods a chain serves: the default deny rules (`methods.DENY_RULES`) and the
chain's own `methods.allow` / `methods.deny` lists. Pure; the verdict for a method name is
remembered, so the hot path pays one dict lookup (only for names no longer than any real
method's: a client sending long made-up names would otherwise fill memory with them).

Precedence, most specific intent first: the chain's deny list, then its allow list, then
the default rules. Names are matched without regard to case (a node may accept
`Personal_unlockAccount`); `*` matches any run of characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rpcgate.config.settings import MethodsConfig
from rpcgate.rpc.jsonrpc import METHOD_NOT_FOUND, rpc_error
from rpcgate.rpc.methods import DENY_RULES, DenyRule

_REMEMBERED = 4096  # distinct method names whose verdict is kept (cleared when full)
# Longest method name whose verdict is remembered: real ones have about 40 characters at
# most (`engine_exchangeTransitionConfigurationV1`), and the memo holds 4096 x 128 bytes at most.
_REMEMBERED_NAME_LENGTH = 128  # also the most of a name an error shows


@dataclass(frozen=True, slots=True)
class Denial:
    method: str
    pattern: str  # the rule that denies it
    source: str  # "default policy" | "chain config"
    why: str

    def error(self) -> dict[str, Any]:
        """The JSON-RPC error the caller gets (-32601, as for a method that does not exist).
        A name longer than any real method's is shown cut, not echoed whole (twice)."""
        method = self.method
        if len(method) > _REMEMBERED_NAME_LENGTH:
            method = method[:_REMEMBERED_NAME_LENGTH] + f"... ({len(self.method)} characters)"
        if self.source == "default policy":
            message = (
                f"method {method} is not served: rpcgate's default method policy denies "
                f"{self.pattern} ({self.why}); an operator can serve it with "
                "chains[].methods.allow"
            )
        else:
            message = (
                f"method {method} is not served: denied by this gateway's "
                f"chains[].methods.deny ({self.pattern})"
            )
        return rpc_error(
            METHOD_NOT_FOUND,
            message,
            {"policy": self.source, "rule": self.pattern, "method": method},
        )


def _matcher(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = [".*".join(re.escape(p) for p in pattern.split("*")) for pattern in patterns]
    if not parts:
        return None
    return re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE | re.DOTALL)


def _first_match(patterns: Iterable[str], method: str) -> str | None:
    for pattern in patterns:
        matcher = _matcher([pattern])
        if matcher is not None and matcher.fullmatch(method):
            return pattern
    return None


class MethodPolicy:
    def __init__(self, config: MethodsConfig, rules: tuple[DenyRule, ...] = DENY_RULES) -> None:
        self._config = config
        self._rules = rules
        self._deny = _matcher(config.deny)
        self._allow = _matcher(config.allow)
        self._default = _matcher(rule.pattern for rule in rules)
        self._verdicts: dict[str, Denial | None] = {}

    def check(self, method: str) -> Denial | None:
        """None when the chain serves `method`, else why not."""
        try:
            return self._verdicts[method]
        except KeyError:
            pass
        verdict = self._decide(method)
        if len(method) > _REMEMBERED_NAME_LENGTH:
            return verdict
        if len(self._verdicts) >= _REMEMBERED:
            self._verdicts.clear()
        self._verdicts[method] = verdict
        return verdict

    def _decide(self, method: str) -> Denial | None:
        if self._deny is not None and self._deny.fullmatch(method):
            pattern = _first_match(self._config.deny, method) or method
            return Denial(method, pattern, "chain config", "")
        if self._allow is not None and self._allow.fullmatch(method):
            return None
        if self._default is not None and self._default.fullmatch(method):
            for rule in self._rules:
                if _first_match([rule.pattern], method):
                    return Denial(method, rule.pattern, "default policy", rule.why)
        return None
