"""The engine as the front ends see it: the async front, the engine thread, and building a warm engine."""
