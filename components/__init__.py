"""The components of hybrid-llm: one ComponentResource per concern."""
