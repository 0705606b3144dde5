"""Scripts that work in one queue's slot (keys: `_keys.lua`)."""
