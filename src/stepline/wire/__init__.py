"""The wire format: bytes on stdin and stdout to and from protocol commands and events; knows no executor."""
