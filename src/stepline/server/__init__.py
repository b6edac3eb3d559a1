"""The server: `stepline serve`'s loop over stdin and stdout, and one handler per protocol op."""
