"""Structured output: constraints (JSON schema, regex, Lark grammar, choice) enforced by llguidance."""
