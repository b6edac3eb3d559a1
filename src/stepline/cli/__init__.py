"""The command line: `stepline serve`, `run`, `check`, `graph` and `demo`."""
