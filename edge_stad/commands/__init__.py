"""Subcommands of the ``edge-stad`` command line, one module each (see ``edge_stad.cli``)."""
