"""The command line: Typer commands that parse their options and call one function each, the process's streams,
signals and exit, and what a terminal shows (tables, plots)."""
