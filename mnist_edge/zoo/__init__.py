"""The model zoo: the registry of documented models, their networks and their training recipes."""
