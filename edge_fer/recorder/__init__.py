"""What comes back: the recorder that stores events from the broker, and the report over them."""
