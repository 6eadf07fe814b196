"""The web view: a page with the live picture, faces and events, a snapshot, state, an event feed and metrics."""
