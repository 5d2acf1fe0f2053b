"""Proof-of-Work-Relevance: suites, scoring and consensus math (arrives with the validators issue)."""
