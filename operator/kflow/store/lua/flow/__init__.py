"""Scripts that work in one flow's slot (keys: `_keys.lua`)."""
