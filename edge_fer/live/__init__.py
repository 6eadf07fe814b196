"""The running daemon: capture, the frame pipeline, tracking, and the service that owns the process."""
