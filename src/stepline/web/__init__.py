"""The HTTP front (``serve --http``): REST, live events, webhook triggers and a dashboard."""
