"""The engine: the job table, the bounded queue, the workers and the interpreters that run specs."""
