"""Whether a request may run on hidden reasoning: output tokens the provider bills
that no response shows (OpenAI's o-series and GPT-5 think before they answer, and
send nothing of it; Claude or Gemini with thinking on may too). Only billing asks,
for a response whose output was never counted (billing.py): for such a request the
text delivered bounds nothing, since a "stop generating" can leave a stream after
thousands of unseen thinking tokens and a handful of visible ones.

A request may reason when it asks to (each provider's own switch, not switched
off), or when its model thinks by default. The model list is by name, as the
providers document them; a model missing from it is billed from its delivered
text, as any model was before, unless its request turned thinking on."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dataplane.estimate import gemini_configs

# Models that reason without being asked (names as the providers and the catalog spell them).
REASONS_BY_DEFAULT = re.compile(
    r"""(?:^|/)(?:
        o\d                                  # OpenAI o1, o3, o4-mini ...
      | gpt-5                                # GPT-5 and later (some -chat variants think adaptively)
      | gpt-oss | codex
      | deepseek-reasoner | deepseek-r\d
      | grok-3-mini | grok-4 | grok-code
      | gemini-2\.5 | gemini-[3-9]
      | qwq | qvq | qwen3 | qwen-3
      | kimi-k2-thinking | kimi-k2\.5
      | minimax-m\d
      | magistral
      | glm-4\.[5-9] | glm-[5-9] | zai-glm
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_OFF = ("disabled", "none", "off", 0)  # (0 == False)


def _off(value: object) -> bool:
    return type(value) in (str, int, bool) and value in _OFF


def may_reason(body: Mapping[str, Any], model: str) -> bool:
    if _asks(body):
        return True
    return REASONS_BY_DEFAULT.search(model) is not None and not _switched_off(body)


def _asks(body: Mapping[str, Any]) -> bool:
    """The request's own switch: OpenAI's reasoning_effort / reasoning (chat, Responses),
    Anthropic's and the compatible providers' `thinking`, Qwen's enable_thinking, and
    Gemini's thinkingConfig with a budget that is not 0."""
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and not _off(effort):
        return True
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and not _off(reasoning.get("effort")):
        return True
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping) and not _off(thinking.get("type")):
        return True
    if body.get("enable_thinking") is True:
        return True
    return any(not _off(budget) for budget in _gemini_budgets(body))


def _switched_off(body: Mapping[str, Any]) -> bool:
    reasoning = body.get("reasoning")
    thinking = body.get("thinking")
    return (
        body.get("reasoning_effort") == "none"
        or (isinstance(reasoning, Mapping) and reasoning.get("effort") == "none")
        or (isinstance(thinking, Mapping) and thinking.get("type") == "disabled")
        or body.get("enable_thinking") is False
        or any(type(budget) is int and budget == 0 for budget in _gemini_budgets(body))
    )


def _gemini_budgets(body: Mapping[str, Any]) -> list[object]:
    budgets: list[object] = []
    for config in gemini_configs(body):
        for thinking in (config.get("thinkingConfig"), config.get("thinking_config")):
            if isinstance(thinking, Mapping):
                budgets += [
                    thinking.get(name, -1)
                    for name in ("thinkingBudget", "thinking_budget", "thinkingLevel", "thinking_level")
                    if name in thinking
                ] or [-1]
    return budgets
