"""The `vramwatch` command: one subcommand per stage, each one call into `pipeline` or a stage (cli.main builds it)."""
