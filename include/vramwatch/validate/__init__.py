"""The validate stage: a Great Expectations suite over a night's results, and quarantine for rows that fail it."""
