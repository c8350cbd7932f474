"""The `soundsift` command: one module per subcommand, wired together by main."""
