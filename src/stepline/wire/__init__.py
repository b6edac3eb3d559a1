"""The wire format: bytes on stdin/stdout to and from commands and events; knows no executor."""
