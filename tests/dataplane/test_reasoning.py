"""Which requests may run on hidden reasoning (dataplane/reasoning.py), switch by switch."""

from __future__ import annotations

import pytest

from dataplane.reasoning import may_reason


@pytest.mark.parametrize(
    ("body", "model", "reasons"),
    [
        ({}, "o3-mini", True),  # thinks by default
        ({}, "gpt-5-4-mini", True),
        ({}, "openai/o4-mini", True),
        ({}, "gemini-2.5-flash", True),
        ({}, "deepseek-reasoner", True),
        ({}, "gpt-4o-mini", False),
        ({}, "claude-sonnet-4-5", False),
        ({"reasoning_effort": "high"}, "gpt-4o-mini", True),  # asked to
        ({"reasoning": {"effort": "low"}}, "gpt-4o-mini", True),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "claude-sonnet-4-5", True),
        ({"enable_thinking": True}, "qwen-plus", True),
        ({"generationConfig": {"thinkingConfig": {"thinkingBudget": 512}}}, "gemma-3", True),
        ({"generation_config": {"thinking_config": {"thinking_level": "high"}}}, "gemma-3", True),
        ({"reasoning_effort": "none"}, "gpt-5-4", False),  # switched off
        ({"reasoning": {"effort": "none"}}, "gpt-5-4", False),
        ({"thinking": {"type": "disabled"}}, "kimi-k2-thinking", False),
        ({"enable_thinking": False}, "qwen3-max", False),
        ({"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}, "gemini-2.5-flash", False),
        ({"reasoning": {"effort": ["junk"]}}, "gpt-4o-mini", True),  # odd values never raise
        ({"reasoning_effort": 3}, "gpt-4o-mini", False),
    ],
)
def test_may_reason(body: dict[str, object], model: str, reasons: bool) -> None:
    assert may_reason(body, model) is reasons
