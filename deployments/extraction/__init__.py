"""Job-posting extraction: structured data, visible text, rules, the LLM for the gaps."""
