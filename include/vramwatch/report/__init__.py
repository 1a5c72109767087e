"""The report stage, every view of the history built once: seed-format Markdown, HTML with plots, fits-on-a-GPU and
change tables, the page's data, the build comparison and the history charts of both."""
