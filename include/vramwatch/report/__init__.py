"""The report stage: seed-format Markdown, HTML with plots, fits-on-a-GPU and change tables."""
