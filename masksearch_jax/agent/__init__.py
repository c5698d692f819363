"""The search agent: prompt protocol, rollouts, LLM backends, trajectory synthesis."""
