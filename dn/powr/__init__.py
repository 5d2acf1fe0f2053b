"""Proof-of-Work-Relevance: suites, scoring, consensus math (the validators issue)."""
